"""Models of the benchmarks: a MindSpore BERT encoder with a pluggable dense factory, and its weight loader."""
