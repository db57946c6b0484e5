"""Benchmarks of mindpet on real models and data (MiniLM on BBC News headlines, SmolLM2 on BBC articles).

The modules directly in this package are the command-line tools, each run as ``python -m benchmarks.<tool>``
from the repository root; ``python -m benchmarks`` lists them (the registry: ``benchmarks.lib.entry_points``;
``benchmarks/README.md`` opens with the same table). ``benchmarks.peer`` is a tool too, of several modules
(``python -m benchmarks.peer``). Library code lives in the other sub-packages:

    benchmarks.lib       shared code of the tools (assets, tasks, methods, training, outputs, worker processes)
    benchmarks.data      BBC News loading, de-duplication, split and tokenisation
    benchmarks.models    the MindSpore BERT and LLaMA ports and their weight loaders

Nothing in ``mindpet`` imports this package.
"""
