"""What both sides of the LM peer benchmark share (numpy only): the job's settings, the LoRA weights drawn
once so both frameworks start from identical numbers, GGUF -> Hugging Face parameter names, the logit
check, and the per-phase memory / step-time table with its ratios and target verdicts.

The job: SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to float32), LoRA r=8 alpha=16 dropout 0.05 on the q
and v projections, batch 1 x 256 tokens, mean next-token cross-entropy, Adam (constant learning rate)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

SIDES = ("ours", "theirs")
SIDE_LABELS = {"ours": "MindSpore + mindpet", "theirs": "PyTorch + PEFT"}
# The job's phases in order; every phase is one request to both workers.
PHASES = ("start", "import", "read", "build", "forward", "first_step")
PHASE_LABELS = {
    "start": "interpreter started",
    "import": "framework imported",
    "read": "GGUF read + dequantised",
    "build": "model built, weights loaded, LoRA set, frozen",
    "forward": "first forward (eval; compiles ours) + logits",
    "first_step": "first LoRA step (compiles ours)",
    "steps": "timed LoRA steps",
    "forwards": "timed forwards (eval)",
}
CASES = ("step", "forward")
TARGETS = {"peak": 1.0, "peak_stretch": 0.8, "step_cpu": 1.0, "step_over_forward": 2.2}


@dataclass(frozen=True)
class LMSetup:
    """Everything a worker needs (JSON-able, sent to both workers)."""

    gguf_path: str
    batch_path: str
    """``.npy`` with int32 token ids (batch, seq)."""
    logits_dir: str
    seed: int = 0
    rank: int = 8
    alpha: float = 16.0
    lora_dropout: float = 0.05
    targets: Sequence[str] = field(default=("q", "v"))
    lr: float = 2e-3
    release_heap: bool = True
    """Ours: ``mindpet.utils.memory.release_free_heap()`` after loading and after the first step."""
    share_block_graph: bool = True
    """Ours: :class:`benchmarks.models.llama.SharedLlamaBlock` layers (one compiled block graph; the LoRA
    dropout masks come from MindSpore's generator on the fused CPU kernels, so every layer draws its own)."""
    attention_backend: Optional[str] = None
    """Ours: the backend of the LLaMA attention core (``LlamaConfig.attention_backend``; None: the global
    choice, i.e. the fused CPU kernel)."""
    norm_backend: Optional[str] = None
    """Ours: backend of the model's fused ``RMSNorm`` (None: global choice, fused when built; ``'composed'``)."""
    mlp_backend: Optional[str] = None
    """Ours: backend of the MLPs' fused ``SwiGLU`` (as ``norm_backend``)."""

    def to_json(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_json(cls, values: Mapping) -> "LMSetup":
        values = dict(values)
        values["targets"] = tuple(values.get("targets", ("q", "v")))
        return cls(**values)


def lora_weights(num_layers: int, hidden: int, q_out: int, v_out: int, setup: LMSetup
                 ) -> Dict[Tuple[int, str], Tuple[np.ndarray, np.ndarray]]:
    """``{(layer, "q"|"v"): (A [r, hidden], B [out, r])}`` float32, identical on both sides. B is non-zero
    (unlike a fresh LoRA) so the logit check covers the LoRA branch and its scaling ``alpha / r``."""
    rng = np.random.default_rng(setup.seed)
    out = {}
    for layer in range(num_layers):
        for target, width in (("q", q_out), ("v", v_out)):
            if target not in setup.targets:
                continue
            a = rng.normal(0.0, 1.0 / math.sqrt(hidden), (setup.rank, hidden)).astype(np.float32)
            b = rng.normal(0.0, 0.02, (width, setup.rank)).astype(np.float32)
            out[layer, target] = (a, b)
    return out


_HF_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name: str) -> str:
    """GGUF tensor name -> ``transformers`` ``LlamaForCausalLM`` state-dict key."""
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in _HF_LAYER \
            or parts[3] != "weight":
        raise ValueError(f"not a LLaMA GGUF tensor name: {gguf_name!r}")
    return f"model.layers.{int(parts[1])}.{_HF_LAYER[parts[2]]}.weight"


def compare_logits(ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> dict:
    """Max |ours - theirs| against ``tolerance * max(1, max |theirs|)``; shapes must agree."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"logit shapes differ: ours {ours.shape}, theirs {theirs.shape}")
    diff = float(np.max(np.abs(ours - theirs)))
    scale = max(1.0, float(np.max(np.abs(theirs))))
    return {"max_abs_diff": diff, "scale": scale, "tolerance": tolerance * scale, "ok": diff <= tolerance * scale}


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def summarize(report: Mapping[str, Mapping]) -> dict:
    """From each side's ``{"phases": {name: {"rss_mb", "peak_mb", "cpu_s", "wall_s"}}, "times": {case:
    {"wall": [...], "cpu": [...]}}}``: the job peak (largest phase peak), the medians, their ratios
    (ours / theirs) and ours' step / forward."""
    out = {}
    for side in SIDES:
        phases = report[side]["phases"]
        times = report[side]["times"]
        out[side] = {"peak_mb": max(p["peak_mb"] for p in phases.values()),
                     **{f"{case}_{kind}_s": _median(times[case][kind]) for case in CASES for kind in ("cpu", "wall")}}
    ours, theirs = out["ours"], out["theirs"]
    out["ratio"] = {key: ours[key] / theirs[key] for key in ours if theirs[key]}
    out["ours_step_over_forward_cpu"] = ours["step_cpu_s"] / ours["forward_cpu_s"]
    out["theirs_step_over_forward_cpu"] = theirs["step_cpu_s"] / theirs["forward_cpu_s"]
    return out


def verdicts(summary: Mapping) -> list[str]:
    """The issue's targets, each 'met' or 'MISSED' with the measured value."""
    r = summary["ratio"]
    checks = [("job peak RSS <= 1.0x PEFT's", r["peak_mb"], TARGETS["peak"]),
              ("(stretch) job peak RSS <= 0.8x PEFT's", r["peak_mb"], TARGETS["peak_stretch"]),
              ("LoRA step CPU time <= 1.0x PEFT's", r["step_cpu_s"], TARGETS["step_cpu"]),
              ("LoRA step <= 2.2x our forward (CPU time)", summary["ours_step_over_forward_cpu"],
               TARGETS["step_over_forward"])]
    return [f"{name}: {value:.2f}x -> {'met' if value <= limit else f'MISSED by {value - limit:.2f}'}"
            for name, value, limit in checks]


def markdown(report: Mapping[str, Mapping]) -> str:
    """Per-phase RSS (after / peak during) side by side, step and forward times, ratios and verdicts."""
    lines = ["| phase | ours RSS after / peak during (MiB) | PEFT RSS after / peak during (MiB) |", "|---|---|---|"]
    for phase in PHASES + ("steps", "forwards"):
        cells = []
        for side in SIDES:
            p = report[side]["phases"].get(phase)
            cells.append("-" if p is None else f"{p['rss_mb']:,.0f} / {p['peak_mb']:,.0f}")
        lines.append(f"| {PHASE_LABELS[phase]} | {cells[0]} | {cells[1]} |")
    s = summarize(report)
    lines += ["", "| | ours | PEFT | ours / PEFT |", "|---|---|---|---|",
              f"| job peak RSS (MiB) | {s['ours']['peak_mb']:,.0f} | {s['theirs']['peak_mb']:,.0f} | "
              f"{s['ratio']['peak_mb']:.2f} |"]
    for case in CASES:
        for kind in ("cpu", "wall"):
            key = f"{case}_{kind}_s"
            lines.append(f"| {'LoRA step' if case == 'step' else 'forward (eval)'}, {kind} s (median) | "
                         f"{s['ours'][key]:.3f} | {s['theirs'][key]:.3f} | {s['ratio'][key]:.2f} |")
    lines.append(f"| LoRA step / forward (CPU) | {s['ours_step_over_forward_cpu']:.2f} | "
                 f"{s['theirs_step_over_forward_cpu']:.2f} | |")
    lines += [""] + [f"- {v}" for v in verdicts(s)]
    return "\n".join(lines) + "\n"
