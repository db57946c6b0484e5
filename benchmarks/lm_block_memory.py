"""Per-block training memory of the frozen LLaMA decoder block, lever by lever (issue 15): the peak RSS a
training step's first call (compile + run) adds for a stack of N frozen :class:`benchmarks.models.llama.LlamaBlock`
(SmolLM2-135M's shapes: hidden 576, 9 heads / 3 KV heads, SwiGLU 1536, 1 x 256 tokens; one trainable Dense in
front, Adam), at N = 4 and N = 8, so the cost of one block is the difference / 4; with each of the model's fused
ops on or off (``RMSNorm`` with the residual add, ``SwiGLU``), and the median CPU seconds of later steps.

    python -m benchmarks.lm_block_memory [--levers composed,rms_norm,swiglu,both] [--blocks 4,8] [--json out]

Each (lever, N) runs in its own process (peaks do not mix); the levers alternate at each N.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Sequence

from benchmarks.lib.procfs import reset_peak, status_mib

# lever -> backends of (RMSNorm, SwiGLU)
LEVERS = {"composed": ("composed", "composed"), "rms_norm": ("fused", "composed"),
          "swiglu": ("composed", "fused"), "both": ("fused", "fused")}


def run_one(lever: str, blocks: int, steps: int = 3) -> dict:
    """One stack in this process: peak RSS added by the first step, RSS after it, CPU s of later steps."""
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from benchmarks.models.llama import LlamaBlock, LlamaConfig, default_dense, rotary_tables

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    tokens = 256
    config = LlamaConfig(vocab_size=64, hidden_size=576, intermediate_size=1536, num_layers=blocks, num_heads=9,
                         num_kv_heads=3, max_positions=tokens)
    norm_backend, mlp_backend = LEVERS[lever]

    class Stack(nn.Cell):
        def __init__(self):
            super().__init__()
            self.inp = nn.Dense(576, 576)
            self.blocks = nn.CellList([LlamaBlock(config, i, default_dense, norm_backend, mlp_backend)
                                       for i in range(blocks)])
            for p in self.blocks.get_parameters():
                p.requires_grad = False

        def construct(self, x, cos, sin, bias):
            x = self.inp(x)
            for block in self.blocks:
                x = block(x, cos, sin, bias)
            return ops.mean(x * x)

    net = Stack()
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), 1e-3))
    cos, sin = (Tensor(t) for t in rotary_tables(config))
    causal = Tensor(np.triu(np.full((tokens, tokens), -1e9, np.float32), 1))
    x = Tensor(np.random.default_rng(0).standard_normal((1, tokens, 576)).astype(np.float32))
    base = status_mib("VmRSS")
    reset_peak()
    loss = float(step(x, cos, sin, causal).asnumpy())
    first = status_mib("VmHWM") - base
    after = status_mib("VmRSS") - base
    cpu = []
    for _ in range(steps):
        t = time.process_time()
        step(x, cos, sin, causal).asnumpy()
        cpu.append(time.process_time() - t)
    return {"lever": lever, "blocks": blocks, "first_call_peak_mib": round(first, 1),
            "after_first_mib": round(after, 1), "later_peak_mib": round(status_mib("VmHWM") - base, 1),
            "step_cpu_s": round(float(np.median(cpu)), 3), "first_loss": loss,
            "impl": [net.blocks[0].input_norm.impl, net.blocks[0].mlp.swiglu.impl]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--blocks", default="4,8")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]))), flush=True)
        return 0
    levers = [l.strip() for l in args.levers.split(",") if l.strip()]
    for lever in levers:
        if lever not in LEVERS:
            parser.error(f"unknown lever {lever!r}; known: {tuple(LEVERS)}")
    results = []
    for n in (int(b) for b in args.blocks.split(",")):
        for lever in levers:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.lm_block_memory", "--one", lever, str(n)],
                                  capture_output=True, text=True, check=False)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {"lever": lever, "blocks": n,
                                                              "error": proc.stderr.strip().splitlines()[-1:]}
            print(json.dumps(result), flush=True)
            results.append(result)
    by = {(r["lever"], r["blocks"]): r for r in results if "error" not in r}
    counts = sorted({r["blocks"] for r in results})
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        for lever in levers:
            if (lever, lo) in by and (lever, hi) in by:
                per = (by[(lever, hi)]["first_call_peak_mib"] - by[(lever, lo)]["first_call_peak_mib"]) / (hi - lo)
                kept = (by[(lever, hi)]["after_first_mib"] - by[(lever, lo)]["after_first_mib"]) / (hi - lo)
                print(f"{lever:>9}: first step adds {per:6.1f} MiB peak and keeps {kept:6.1f} MiB per block; "
                      f"step {by[(lever, hi)]['step_cpu_s']:.3f} CPU s at N = {hi}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
