"""Plain-MindSpore reproductions (no mindpet) of the memory costs issue 15 traced to MindSpore 2.10 itself (CPU,
GRAPH mode): each case runs in its own process and reports the peak RSS (``VmHWM``) its training graph
adds at compile + first step, against the size of the weights involved.

    python -m benchmarks.ms_memory_repro [--cases transpose,cast,blocks,lazy_inline,index_tables] [--json out.json]

Cases:
- ``transpose``: a frozen (requires_grad=False) 49152 x 576 float32 table (113 MB, SmolLM2's tied
  embedding) used as ``matmul(h, transpose(table))`` in a training step (one trainable Dense before it),
  against ``MatMul(transpose_b=True)(h, table)``; also ``cast`` to its own dtype and ``reshape``.
- ``blocks``: a stack of N frozen LLaMA-like decoder blocks (hidden 576, 9 heads, SwiGLU 1536, 256 tokens,
  one trainable Dense in front): the peak added per block at N = 4 and N = 8 (weights: 14 MB per block).
- ``lazy_inline``: the same 8-block stack with ``@mindspore.lazy_inline`` on the block's ``__init__``
  (MindSpore's documented way to compile a repeated block once), trained by ``nn.TrainOneStepCell`` and by
  ``value_and_grad`` inside one ``@jit`` function, and with ``policy="front"`` (compiled once, inlined by
  the front end); reports the cost or the error.
- ``shared_dropout``: four blocks with ``nn.Dropout(p=0.5)``, inlined and under ``lazy_inline(policy="front")``:
  whether every block draws the same mask (with the shared graph it does: the first block's seeds).
- ``index_tables``: one op after a trainable Dense on a [1, 256, 576] activation, trained by SGD: nothing,
  a same-shape Mul (x * x), a Transpose to heads (1, 9, 256, 64), a broadcasting Mul / Add with a frozen
  [576] vector, and a small attention core (3 head transposes, two batch matmuls, softmax, a broadcast
  [256, 256] mask add, the transpose back). MindSpore 2.10's CPU Transpose and broadcasting elementwise
  kernels build per-element ``size_t`` index tables at their first launch and keep them for the life of
  the graph (forward and backward): the RSS left after the first step, against the ``none`` variant.
- ``embedding_init``: ``nn.Embedding(49152, 576, embedding_table=Normal(0.02))`` then ``set_data`` of a
  loaded table: MindSpore 2.10's ``nn.Embedding`` keeps its initial table as ``init_tensor`` next to the
  Parameter, so the replaced initial values stay (108 MiB); ``keep`` against ``drop`` (``init_tensor = None``).
- ``compile_heap``: the 8-block stack's training step compiled alone (``Cell.compile``), then glibc
  ``malloc_trim(0)``, then run: how much of the RSS a compile leaves is freed heap that glibc keeps
  (returned by the trim), and whether trimming before the first run lowers that run's peak.
- ``recycle``: the 8-block stack with two graphs, its training step and its loss in eval mode, each run
  twice; then ``mindspore.ms_memory_recycle()`` (``recycle``) or nothing (``none``) and each graph run once
  more: the CPU seconds of those runs and the RSS after them (the recycle makes every graph set itself up
  again at its next run).
- ``cross_entropy``: the LM loss over SmolLM2-sized logits ([1, 256, 49152] float32, next-token targets) and
  its gradient, as ``log_softmax`` then ``gather_elements`` (``composed``) or as one
  ``SparseSoftmaxCrossEntropyWithLogits`` (``fused``): CPU seconds of the loss and of loss + gradient
  (median of 3 after a warm-up), and the peak RSS the first gradient call adds. Not a memory cost but a
  time one: the composed backward's elementwise passes over the logits cost ~7x the fused op's.
- ``minilm_bound``: a MiniLM-L6-H384-shaped BERT encoder in plain MindSpore ops (vocab 30522, 6 layers,
  12 heads, FFN 1536, a 5-class head on the mean of the tokens; batch 32 x 32, Adam, 2 steps) trained
  ``full`` (every parameter) or ``head`` (encoder frozen and no backward through it: what a delta method
  whose own cost were zero could at best reach): the whole process's peak RSS, import included, as the
  classification suite measures it. head / full is the floor of any delta method's peak / full on this
  model and runtime (issue 15's MiniLM target: <= 0.7).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Sequence

from benchmarks.lib.procfs import reset_peak, status_mib

CASES = ("transpose", "cast", "blocks", "lazy_inline", "shared_dropout", "index_tables", "embedding_init",
         "compile_heap", "recycle", "cross_entropy", "minilm_bound")
INDEX_VARIANTS = ("none", "mul_same_shape", "transpose", "mul_broadcast", "add_broadcast", "attention_core")


def _step_cost(step, *inputs) -> dict:
    """Peak RSS added by the first call (compile + run) and by the second call, in MiB."""
    base = status_mib("VmRSS")
    reset_peak()
    step(*inputs)
    first = status_mib("VmHWM") - base
    after_first = status_mib("VmRSS") - base
    reset_peak()
    step(*inputs)
    return {"first_call_peak_mib": round(first, 1), "after_first_mib": round(after_first, 1),
            "second_call_peak_mib": round(status_mib("VmHWM") - base, 1)}


def _ms():
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    return ms


def case_head(variant: str) -> dict:
    """A frozen table used by the output projection in one of four ways; one trainable Dense before it."""
    import numpy as np
    ms = _ms()
    from mindspore import Parameter, Tensor, nn, ops

    vocab, hidden, tokens = 49152, 576, 256

    class Head(nn.Cell):
        def __init__(self):
            super().__init__()
            self.proj = nn.Dense(hidden, hidden)
            table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32) * 0.02
            self.table = Parameter(Tensor(table), name="table", requires_grad=False)
            self.matmul_tb = ops.MatMul(transpose_b=True)

        def construct(self, x):
            h = self.proj(x)
            if variant == "transpose":
                logits = ops.matmul(h, ops.transpose(self.table, (1, 0)))
            elif variant == "cast":
                logits = self.matmul_tb(h, ops.cast(self.table, ms.float32))
            elif variant == "reshape":
                logits = self.matmul_tb(h, ops.reshape(self.table, (vocab, hidden)))
            else:
                logits = self.matmul_tb(h, self.table)
            return ops.logsumexp(logits, -1).mean()

    net = Head()
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-3))
    x = Tensor(np.random.default_rng(1).standard_normal((tokens, hidden)).astype(np.float32))
    return {"variant": variant, "weights_mib": round(vocab * hidden * 4 / 2 ** 20, 1), **_step_cost(step, x)}


def _block_stack(n: int, lazy: bool, policy=None):
    import numpy as np
    ms = _ms()
    from mindspore import Tensor, nn, ops

    hidden, heads, ffn, tokens = 576, 9, 1536, 256
    d = hidden // heads

    class RMSNorm(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = ms.Parameter(Tensor(np.ones(hidden, np.float32)), requires_grad=False)

        def construct(self, x):
            return x * ops.rsqrt(ops.mean(x * x, -1, keep_dims=True) + 1e-5) * self.weight

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            dense = lambda i, o: nn.Dense(i, o, has_bias=False)  # noqa: E731
            self.q, self.k, self.v, self.o = dense(hidden, hidden), dense(hidden, hidden), dense(hidden, hidden), \
                dense(hidden, hidden)
            self.gate, self.up, self.down = dense(hidden, ffn), dense(hidden, ffn), dense(ffn, hidden)
            for p in self.get_parameters():
                p.requires_grad = False

        def construct(self, x, bias):
            h = self.n1(x)
            split = lambda t: ops.transpose(ops.reshape(t, (1, tokens, heads, d)), (0, 2, 1, 3))  # noqa: E731
            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            s = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / d ** 0.5) + bias, -1)
            c = ops.reshape(ops.transpose(ops.matmul(s, v), (0, 2, 1, 3)), (1, tokens, hidden))
            x = x + self.o(c)
            h = self.n2(x)
            g = self.gate(h)
            return x + self.down(g * ops.sigmoid(g) * self.up(h))

    if lazy:
        Block.__init__ = ms.lazy_inline(Block.__init__, policy=policy)

    class Stack(nn.Cell):
        def __init__(self):
            super().__init__()
            self.inp = nn.Dense(hidden, hidden)
            self.blocks = nn.CellList([Block() for _ in range(n)])

        def construct(self, x, bias):
            x = self.inp(x)
            for block in self.blocks:
                x = block(x, bias)
            return (x * x).mean()

    causal = np.triu(np.full((tokens, tokens), -1e9, np.float32), 1)
    x = Tensor(np.random.default_rng(0).standard_normal((1, tokens, hidden)).astype(np.float32))
    return Stack(), x, Tensor(causal)


def case_blocks(n: int) -> dict:
    from mindspore import nn

    net, x, bias = _block_stack(n, lazy=False)
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-3))
    return {"blocks": n, "weights_mib_per_block": round((4 * 576 * 576 + 3 * 576 * 1536) * 4 / 2 ** 20, 1),
            **_step_cost(step, x, bias)}


def case_lazy_inline(form: str) -> dict:
    import mindspore as ms
    from mindspore import nn

    net, x, bias = _block_stack(8, lazy=True, policy="front" if form.endswith("_front") else None)
    optimizer = nn.Adam(net.trainable_params(), 1e-3)
    if form.startswith("train_one_step_cell"):
        step = nn.TrainOneStepCell(net, optimizer)
    else:
        grad_fn = ms.value_and_grad(net, None, optimizer.parameters)

        @ms.jit
        def step(x, bias):
            loss, grads = grad_fn(x, bias)
            optimizer(grads)
            return loss
    try:
        return {"form": form, "ok": True, **_step_cost(step, x, bias)}
    except RuntimeError as err:
        return {"form": form, "ok": False, "error": str(err).strip().splitlines()[0][:200]}


def case_shared_dropout(policy: str) -> dict:
    """Four blocks each applying ``nn.Dropout(p=0.5)`` to the same ones: do they draw the same mask?"""
    import numpy as np
    ms = _ms()
    from mindspore import Tensor, nn, ops

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(p=0.5)

        def construct(self, x):
            return self.drop(x)

    if policy == "front":
        Block.__init__ = ms.lazy_inline(Block.__init__, policy="front", attrs=[])

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.blocks = nn.CellList([Block() for _ in range(4)])

        def construct(self, x):
            return ops.stack([block(x) for block in self.blocks])

    net = Net()
    net.set_train(True)
    out = net(Tensor(np.ones((4, 64), np.float32))).asnumpy()
    return {"policy": policy, "identical_masks": bool(all(np.array_equal(out[0], o) for o in out[1:]))}


def case_index_tables(variant: str) -> dict:
    """One op (``INDEX_VARIANTS``) on a [1, 256, 576] activation in a training step; see the module docstring."""
    import numpy as np
    ms = _ms()
    from mindspore import Parameter, Tensor, nn, ops

    tokens, hidden, heads = 256, 576, 9
    d = hidden // heads

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.inp = nn.Dense(hidden, hidden)
            self.w = Parameter(Tensor(np.full(hidden, 0.5, np.float32)), name="w", requires_grad=False)
            self.mask = Tensor(np.triu(np.full((tokens, tokens), -1e9, np.float32), 1))

        def construct(self, x):
            x = self.inp(x)
            split = lambda t: ops.transpose(ops.reshape(t, (1, tokens, heads, d)), (0, 2, 1, 3))  # noqa: E731
            if variant == "mul_same_shape":
                y = x * x
            elif variant == "transpose":
                y = split(x)
            elif variant == "mul_broadcast":
                y = x * self.w
            elif variant == "add_broadcast":
                y = x + self.w
            elif variant == "attention_core":
                q, k, v = split(x), split(x * 0.5), split(x * 2.0)
                p = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / d ** 0.5) + self.mask, -1)
                y = ops.reshape(ops.transpose(ops.matmul(p, v), (0, 2, 1, 3)), (1, tokens, hidden))
            else:
                y = x
            return (y * y).mean()

    net = Net()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), 1e-3))
    x = Tensor(np.random.default_rng(0).standard_normal((1, tokens, hidden)).astype(np.float32))
    return {"variant": variant, "activation_mib": round(tokens * hidden * 4 / 2 ** 20, 2), **_step_cost(step, x)}


def case_embedding_init(variant: str) -> dict:
    """RSS kept by an ``nn.Embedding`` whose table is then replaced by ``set_data`` (``keep`` / ``drop`` its
    ``init_tensor``)."""
    ms = _ms()
    import numpy as np
    from mindspore import Tensor, nn
    from mindspore.common.initializer import Normal

    base = status_mib("VmRSS")
    embedding = nn.Embedding(49152, 576, embedding_table=Normal(0.02))
    if variant == "drop":
        embedding.init_tensor = None
    built = status_mib("VmRSS") - base
    table = np.ones((49152, 576), np.float32)
    embedding.embedding_table.set_data(Tensor(table))
    del table
    del ms
    return {"variant": variant, "table_mib": round(49152 * 576 * 4 / 2 ** 20, 1), "after_build_mib": round(built, 1),
            "after_set_data_mib": round(status_mib("VmRSS") - base, 1)}


def case_compile_heap(variant: str) -> dict:
    """The 8-block stack's step: compile alone, (``trim``: ``malloc_trim(0)``,) first run; RSS after each."""
    _ms()
    import ctypes
    from mindspore import nn

    net, x, bias = _block_stack(8, lazy=False)
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-3))
    base = status_mib("VmRSS")
    reset_peak()
    step.compile(x, bias)
    out = {"variant": variant, "compile_peak_mib": round(status_mib("VmHWM") - base, 1),
           "after_compile_mib": round(status_mib("VmRSS") - base, 1)}
    if variant == "trim":
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        out["after_trim_mib"] = round(status_mib("VmRSS") - base, 1)
    reset_peak()
    step(x, bias)
    out.update(first_run_peak_mib=round(status_mib("VmHWM") - base, 1),
               after_first_run_mib=round(status_mib("VmRSS") - base, 1))
    return out


def case_recycle(variant: str) -> dict:
    """Train and eval graphs of the 8-block stack, then (``recycle``) ``ms_memory_recycle()``, then each again."""
    ms = _ms()
    import time
    from mindspore import nn

    net, x, bias = _block_stack(8, lazy=False)
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-3))

    def run(train: bool) -> float:
        net.set_train(train)
        cpu = time.process_time()
        (step if train else net)(x, bias).asnumpy()
        return time.process_time() - cpu

    for train in (True, True, False, False):
        run(train)
    before = status_mib("VmRSS")
    if variant == "recycle":
        ms.ms_memory_recycle()
    out = {"variant": variant, "rss_before_mib": round(before, 1),
           "rss_after_switch_mib": round(status_mib("VmRSS"), 1)}
    out.update(step_cpu_s=round(run(True), 3), eval_cpu_s=round(run(False), 3),
               step_again_cpu_s=round(run(True), 3), rss_end_mib=round(status_mib("VmRSS"), 1))
    return out


def case_cross_entropy(variant: str) -> dict:
    """Next-token cross-entropy of [1, 256, 49152] logits and its gradient: ``composed`` or ``fused``."""
    ms = _ms()
    import time
    import numpy as np
    from mindspore import Tensor, nn, ops

    class Composed(nn.Cell):
        def construct(self, logits, ids):
            logp = ops.log_softmax(logits[:, :-1], -1)
            return -ops.gather_elements(logp, 2, ops.expand_dims(ids[:, 1:], -1)).mean()

    class Fused(nn.Cell):
        def __init__(self):
            super().__init__()
            self.cross_entropy = ops.SparseSoftmaxCrossEntropyWithLogits()

        def construct(self, logits, ids):
            logits = logits[:, :-1]
            batch, length, vocab = logits.shape
            return self.cross_entropy(ops.reshape(logits, (batch * length, vocab)),
                                      ops.reshape(ids[:, 1:], (batch * length,)))

    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((1, 256, 49152)).astype(np.float32))
    ids = Tensor(rng.integers(0, 49152, (1, 256)).astype(np.int32))
    loss = Composed() if variant == "composed" else Fused()
    grad = ms.grad(loss, grad_position=0)
    out = {"variant": variant, "first_grad_call": _step_cost(lambda *a: grad(*a).asnumpy(), logits, ids)}

    def cpu_seconds(fn) -> float:
        times = []
        for _ in range(3):
            start = time.process_time()
            fn(logits, ids).asnumpy()
            times.append(time.process_time() - start)
        return round(sorted(times)[1], 3)

    loss(logits, ids)
    out.update(loss=float(loss(logits, ids).asnumpy()), loss_cpu_s=cpu_seconds(loss), grad_cpu_s=cpu_seconds(grad))
    return out


def case_minilm_bound(variant: str) -> dict:
    """Peak RSS of two Adam steps of a MiniLM-shaped encoder, ``full`` or ``head``-only (module docstring)."""
    import numpy as np
    ms = _ms()
    from mindspore import Tensor, nn, ops

    vocab, hidden, layers, heads, ffn, batch, length, classes = 30522, 384, 6, 12, 1536, 32, 32, 5
    d = hidden // heads

    class Layer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Dense(hidden, hidden) for _ in range(4))
            self.up, self.down = nn.Dense(hidden, ffn), nn.Dense(ffn, hidden)
            self.norm1, self.norm2 = nn.LayerNorm((hidden,)), nn.LayerNorm((hidden,))

        def construct(self, x):
            split = lambda t: ops.transpose(ops.reshape(t, (batch, length, heads, d)), (0, 2, 1, 3))  # noqa: E731
            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            p = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / d ** 0.5), -1)
            c = ops.reshape(ops.transpose(ops.matmul(p, v), (0, 2, 1, 3)), (batch, length, hidden))
            x = self.norm1(x + self.o(c))
            return self.norm2(x + self.down(ops.gelu(self.up(x))))

    class Classifier(nn.Cell):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, hidden)
            self.layers = nn.CellList([Layer() for _ in range(layers)])
            self.head = nn.Dense(hidden, classes)
            self.loss = nn.CrossEntropyLoss()
            self.head_only = variant == "head"

        def construct(self, ids, labels):
            x = self.embedding(ids)
            for layer in self.layers:
                x = layer(x)
            pooled = x.mean(1)
            if self.head_only:
                pooled = ops.stop_gradient(pooled)
            return self.loss(self.head(pooled), labels)

    net = Classifier()
    if variant == "head":
        for param in net.get_parameters():
            param.requires_grad = param.name.startswith("head.")
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-4))
    rng = np.random.default_rng(0)
    ids = Tensor(rng.integers(1000, 20000, (batch, length)).astype(np.int32))
    labels = Tensor(rng.integers(0, classes, (batch,)).astype(np.int32))
    built = status_mib("VmRSS")
    for _ in range(2):
        step(ids, labels).asnumpy()
    trainable = sum(int(np.prod(p.shape)) for p in net.trainable_params())
    return {"variant": variant, "trainable_parameters": trainable, "rss_after_build_mib": round(built, 1),
            "peak_mib": round(status_mib("VmHWM"), 1)}


def run_case(name: str, arg: str) -> dict:
    """One case in this process."""
    if name == "minilm_bound":
        return case_minilm_bound(arg)
    if name == "cross_entropy":
        return case_cross_entropy(arg)
    if name == "recycle":
        return case_recycle(arg)
    if name == "embedding_init":
        return case_embedding_init(arg)
    if name == "compile_heap":
        return case_compile_heap(arg)
    if name in ("transpose", "cast"):
        return case_head(arg)
    if name == "blocks":
        return case_blocks(int(arg))
    if name == "shared_dropout":
        return case_shared_dropout(arg)
    if name == "index_tables":
        return case_index_tables(arg)
    return case_lazy_inline(arg)


PLAN = {"transpose": [("transpose", "transpose_b"), ("transpose", "transpose")],
        "cast": [("cast", "cast"), ("cast", "reshape")],
        "blocks": [("blocks", "4"), ("blocks", "8")],
        "lazy_inline": [("lazy_inline", "train_one_step_cell"), ("lazy_inline", "value_and_grad_jit"),
                        ("lazy_inline", "train_one_step_cell_front")],
        "shared_dropout": [("shared_dropout", "inlined"), ("shared_dropout", "front")],
        "index_tables": [("index_tables", v) for v in INDEX_VARIANTS],
        "embedding_init": [("embedding_init", "keep"), ("embedding_init", "drop")],
        "compile_heap": [("compile_heap", "plain"), ("compile_heap", "trim")],
        "recycle": [("recycle", "none"), ("recycle", "recycle")],
        "cross_entropy": [("cross_entropy", "composed"), ("cross_entropy", "fused")],
        "minilm_bound": [("minilm_bound", "full"), ("minilm_bound", "head")]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_case(*args.one)), flush=True)
        return 0
    results = []
    for case in (c.strip() for c in args.cases.split(",") if c.strip()):
        if case not in PLAN:
            parser.error(f"unknown case {case!r}; known: {CASES}")
        for name, arg in PLAN[case]:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.ms_memory_repro", "--one", name, arg],
                                  capture_output=True, text=True, check=False)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr.strip().splitlines()[-1:]}
            result["case"] = name
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
