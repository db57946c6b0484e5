"""Benchmarks of mindpet on real models and data (MiniLM on BBC News headlines).

Sub-modules:
    benchmarks.assets        locate the offline model and data packages
    benchmarks.data          BBC News loading, de-duplication, split and tokenisation
    benchmarks.models        the MindSpore BERT port, its classifier and the HF weight loader
    benchmarks.finetune      the train / evaluate / save / reload path shared by every job
    benchmarks.quick_lora    the quick LoRA job (``python -m benchmarks.quick_lora``)
    benchmarks.methods       the fine-tuning methods (full, LoRA, adapters, BitFit, prefix, prompt)
    benchmarks.suite         the classification table (``python -m benchmarks.suite --quick | --full``)

Nothing in ``mindpet`` imports this package.
"""
