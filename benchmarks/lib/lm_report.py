"""The language-model table: per-method summary over seeds, ``lm_table.md`` and ``lm_results.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from benchmarks.lib.lm_profile import ALL_METHODS
from benchmarks.lib.metrics import mean_std
from benchmarks.lib.outputs import write_text


def _fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 20:.0f} MB" if n >= 2 ** 20 else f"{n / 1024:.1f} KB"


def _ratio(stored, float32) -> str:
    """``"<stored> (<ratio>x)"``, or ``-`` when not recorded (runs from before issue 16)."""
    if not stored or not float32:
        return "-"
    return f"{_fmt_bytes(stored)} ({stored / float32:.3f}x)"


def summarise(runs: Sequence[dict]) -> list[dict]:
    """One entry per method (in ``ALL_METHODS`` order): held-out perplexity over seeds (mean, sample std), its
    ratio to the zero-shot perplexity, and whether every seed ends below zero-shot."""
    zero = mean_std([r["heldout_ppl"] for r in runs if r["method"] == "zero_shot"])[0]
    table = []
    for method in ALL_METHODS:
        rs = sorted((r for r in runs if r["method"] == method), key=lambda r: r["profile"]["seed"])
        if not rs:
            continue
        ppl = [r["heldout_ppl"] for r in rs]
        entry = {"method": method, "seeds": [r["profile"]["seed"] for r in rs], "parameters": rs[0]["parameters"],
                 "static_bytes": rs[0]["static_bytes"], "frozen_base_bytes": rs[0].get("frozen_base_bytes"),
                 "frozen_base_float32_bytes": rs[0].get("frozen_base_float32_bytes"),
                 "projection_bytes": rs[0].get("projection_bytes"),
                 "projection_float32_bytes": rs[0].get("projection_float32_bytes"), "heldout_ppl": mean_std(ppl), "heldout_ppl_per_seed": ppl,
                 "heldout_ppl_before": mean_std([r["heldout_ppl_before"] for r in rs])[0],
                 "vs_zero_shot": mean_std([p / zero for p in ppl]) if zero == zero else (float("nan"),) * 2,
                 "step_s": mean_std([r.get("step_s_median", float("nan")) for r in rs])[0],
                 "step_cpu_s": mean_std([r.get("step_cpu_s_median", float("nan")) for r in rs])[0],
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "run_s": sum(r["total_s"] for r in rs)}
        if method != "zero_shot" and zero == zero:
            entry["below_zero_shot_every_seed"] = all(p < zero for p in ppl)
        table.append(entry)
    return table


def markdown_table(runs: Sequence[dict], data_info: dict, profile_name: str) -> str:
    summary = summarise(runs)
    lines = [f"# Language-model table ({profile_name} profile)", "",
             f"Model: {runs[0]['model']}. Data: {data_info.get('source')}; held-out chunks: "
             f"{data_info.get('heldout_chunks_used')} x {data_info.get('seq_len')} tokens. Perplexity: mean over "
             "seeds +- sample std; zero-shot has no randomness (one run).", "",
             "| method | seeds | trainable | trainable % | static (params+grads+Adam) | held-out ppl (before -> after) "
             "| per seed | vs zero-shot | step s (median, wall) | step CPU s | peak RSS | frozen base (x float32) "
             "| projections (x float32) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        p = e["parameters"]
        mean, std = e["heldout_ppl"]
        ratio, ratio_std = e["vs_zero_shot"]
        b = e["heldout_ppl_before"]
        before = "" if e["method"] == "zero_shot" else ("(= zero-shot) -> " if b != b else f"{b:.2f} -> ")
        after = f"{mean:.2f}" + (f" +- {std:.2f}" if len(e["seeds"]) > 1 else "")
        vs = "-" if ratio != ratio else f"{ratio:.3f}" + (f" +- {ratio_std:.3f}" if len(e["seeds"]) > 1 else "")
        step = "-" if e["step_s"] != e["step_s"] else f"{e['step_s']:.2f}"
        cpu = "-" if e["step_cpu_s"] != e["step_cpu_s"] else f"{e['step_cpu_s']:.2f}"
        per_seed = " / ".join(f"{x:.2f}" for x in e["heldout_ppl_per_seed"])
        lines.append(f"| {e['method']} | {','.join(map(str, e['seeds']))} | {p['trainable']:,} | "
                     f"{p['trainable_pct']:.4f} | {_fmt_bytes(e['static_bytes'])} | {before}{after} | {per_seed} | "
                     f"{vs} | {step} | {cpu} | {e['peak_rss_mb']:.0f} MB | "
                     f"{_ratio(e['frozen_base_bytes'], e['frozen_base_float32_bytes'])} | "
                     f"{_ratio(e['projection_bytes'], e['projection_float32_bytes'])} |")
    verdicts = [(e["method"], e["below_zero_shot_every_seed"]) for e in summary
                if e["method"] in ("prompt", "prefix") and "below_zero_shot_every_seed" in e]
    if verdicts:
        lines += ["", "Target: prompt and prefix tuning lower held-out perplexity against zero-shot: " + "; ".join(
            f"{m} {'met' if ok else 'MISSED'} (every seed below zero-shot: {ok})" for m, ok in verdicts) + "."]
    lines += ["", "Peak RSS is per method (own process, the largest over seeds) and includes reading/dequantising "
              "the GGUF. Step times are on a shared 2-core CPU; the first step (graph compilation) is excluded."]
    return "\n".join(lines) + "\n"


def write_tables(runs: Sequence[dict], data_info: dict, profile_name: str, output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    md, js = output_dir / "lm_table.md", output_dir / "lm_results.json"
    write_text(md, markdown_table(runs, data_info, profile_name))
    report = {"profile": profile_name, "data": data_info, "summary": summarise(runs), "results": list(runs)}
    write_text(js, json.dumps(report, indent=2))
    return md, js
