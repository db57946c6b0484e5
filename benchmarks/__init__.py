"""Benchmarks of mindpet on real models and data (MiniLM on BBC News headlines, SmolLM2 on BBC articles).

The modules directly in this package are the command-line tools, each run as ``python -m benchmarks.<tool>``
from the repository root (``benchmarks/README.md`` opens with the list). Everything else is library code:

    benchmarks.lib       shared code of the tools (assets, tasks, methods, training, outputs, worker processes)
    benchmarks.data      BBC News loading, de-duplication, split and tokenisation
    benchmarks.models    the MindSpore BERT and LLaMA ports and their weight loaders
    benchmarks.peer      PyTorch + PEFT side by side (a tool with several modules: ``python -m benchmarks.peer``)

Nothing in ``mindpet`` imports this package.
"""
