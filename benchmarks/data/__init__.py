"""Data for the benchmarks: BBC News headlines and articles, tokenisation, fixed splits."""
