"""Benchmarks of mindpet on real models and data (MiniLM on BBC News headlines).

Sub-modules:
    benchmarks.assets        locate the offline model and data packages
    benchmarks.data          BBC News loading, de-duplication, split and tokenisation
    benchmarks.models        the MindSpore BERT port, its classifier and the HF weight loader
    benchmarks.finetune      the train / evaluate / save / reload path shared by every job
    benchmarks.quick_lora    the quick LoRA job (``python -m benchmarks.quick_lora``)
    benchmarks.methods       the fine-tuning methods (full, LoRA, adapters, BitFit, prefix, prompt)
    benchmarks.suite         the classification table (``python -m benchmarks.suite --quick | --full``)
    benchmarks.lm_suite      the language-model table (``python -m benchmarks.lm_suite --quick | --full``)
    benchmarks.peer          PyTorch + PEFT side by side (``python -m benchmarks.peer``, optional extra)
    benchmarks.step_probe    the OpenMP wait-policy probe and A/B (``python -m benchmarks.step_probe --ab N``)
    benchmarks.threads       the environment of worker processes (repository path, OpenMP settings)
    benchmarks.outputs       crash-safe writers for every file the benchmarks produce

Nothing in ``mindpet`` imports this package.
"""
