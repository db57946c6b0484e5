"""The peer benchmark: our MindSpore + mindpet MiniLM against PyTorch + Hugging Face PEFT, side by side.

    python -m benchmarks.peer [--quick] [--modes one,all] [--reps N] [--output-dir results]

The same all-MiniLM-L6-v2 weights, the same classification head and LoRA weights, the same batch (32 BBC
headlines x 32 tokens) and the same optimizer (Adam) on both sides; each framework runs in its own worker
process (they bring different OpenMP runtimes), and the parent interleaves the repetitions between them.
Measured: forward (eval, no gradient) of the plain and of the LoRA model, a full fine-tuning step and a
LoRA step (r=8, alpha=16, dropout 0.1 on query and value, head trainable), at one thread (both workers
pinned to the same core) and at all cores. Printed: times, our/their ratios, LoRA/full and
LoRA-step/forward for each side, the issue's target verdicts, and that both sides give the same logits.

Modules:
    benchmarks.peer.analysis   ratios, tables and verdicts from timings (no framework imported)
    benchmarks.peer.common     shared set-up: the batch, the head and LoRA weights (numpy only)
    benchmarks.peer.cli        argument parsing and the parent process (workers, interleaving, output)
    benchmarks.peer.worker     the worker process (``python -m benchmarks.peer.worker``)
    benchmarks.peer.ms_side    our side: MindSpore GRAPH mode, the BERT port, mindpet LoRADense
    benchmarks.peer.torch_side their side: PyTorch, transformers ``BertModel``, PEFT ``LoraConfig``

Requires the ``peer`` extra (``pip install -e ".[peer]"``: torch, transformers, peft); nothing else in
the project imports torch.
"""
