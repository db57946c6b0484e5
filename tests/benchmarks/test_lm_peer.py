"""The LM peer benchmark (``python -m benchmarks.peer.lm``) and the GGUF loader's memory ownership.

Always (numpy only): GGUF -> HF names, the shared LoRA weights, the logit check, the per-phase table with
its ratios and verdicts, the worker's request loop with a fake side, and that dequantised tensors do not
keep the GGUF file mapped. With the ``peer`` extra (torch, transformers, peft) and ``gguf``: both sides on a
tiny random GGUF give the same logits."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from benchmarks.peer import lm_common
from benchmarks.peer.lm_common import LMSetup
from benchmarks.peer import lm_worker
from tiny_gguf import TINY, write_tiny_gguf

HAS_GGUF = importlib.util.find_spec("gguf") is not None
PEER_MISSING = [n for n in ("torch", "transformers", "peft", "gguf") if importlib.util.find_spec(n) is None]
needs_gguf = pytest.mark.skipif(not HAS_GGUF, reason="the 'gguf' package is not installed")


def test_hf_names_cover_every_llama_tensor():
    assert lm_common.hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert lm_common.hf_name("output_norm.weight") == "model.norm.weight"
    assert lm_common.hf_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert lm_common.hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert lm_common.hf_name("blk.3.ffn_down.weight") == "model.layers.3.mlp.down_proj.weight"
    for bad in ("blk.0.attn_q.bias", "blk.x.attn_q.weight", "blk.0.rope.weight", "token_embd"):
        with pytest.raises(ValueError, match="not a LLaMA GGUF tensor name"):
            lm_common.hf_name(bad)


def test_lora_weights_are_seeded_shaped_and_non_zero():
    setup = LMSetup(gguf_path="g", batch_path="b", logits_dir="l", seed=3)
    first = lm_common.lora_weights(2, 32, 32, 16, setup)
    again = lm_common.lora_weights(2, 32, 32, 16, setup)
    assert sorted(first) == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    a, b = first[1, "v"]
    assert a.shape == (8, 32) and b.shape == (16, 8) and a.dtype == b.dtype == np.float32
    assert np.abs(b).min() > 0
    for key in first:
        np.testing.assert_array_equal(first[key][0], again[key][0])
    other = lm_common.lora_weights(2, 32, 32, 16, LMSetup(gguf_path="g", batch_path="b", logits_dir="l", seed=4))
    assert not np.array_equal(first[0, "q"][0], other[0, "q"][0])
    assert LMSetup.from_json(json.loads(json.dumps(setup.to_json()))) == setup


def test_compare_logits_scales_the_tolerance_and_checks_shapes():
    theirs = np.array([[10.0, -20.0]])
    assert lm_common.compare_logits(theirs + 1e-3, theirs, 1e-4)["ok"]  # 1e-3 <= 1e-4 * 20
    out = lm_common.compare_logits(theirs + 3e-3, theirs, 1e-4)
    assert not out["ok"] and out["max_abs_diff"] == pytest.approx(3e-3) and out["scale"] == 20.0
    with pytest.raises(ValueError, match="shapes differ"):
        lm_common.compare_logits(theirs, theirs.T, 1e-4)


def _report(ours_peak, theirs_peak, ours_step, theirs_step, ours_fwd, theirs_fwd):
    def side(peak, step, fwd):
        phases = {p: {"rss_mb": 100.0, "peak_mb": 100.0, "cpu_s": 0.0, "wall_s": 0.0} for p in lm_common.PHASES}
        phases["first_step"]["peak_mb"] = peak
        return {"phases": phases, "times": {"step": {"cpu": [step, step * 3, step], "wall": [1.0, 1.0, 1.0]},
                                            "forward": {"cpu": [fwd, fwd], "wall": [0.5, 0.5]}}}
    return {"ours": side(ours_peak, ours_step, ours_fwd), "theirs": side(theirs_peak, theirs_step, theirs_fwd)}


def test_summary_ratios_and_verdicts():
    summary = lm_common.summarize(_report(1800.0, 2000.0, 2.0, 2.5, 1.0, 1.0))
    assert summary["ours"]["peak_mb"] == 1800.0 and summary["ours"]["step_cpu_s"] == 2.0  # median, not mean
    assert summary["ratio"]["peak_mb"] == pytest.approx(0.9)
    assert summary["ratio"]["step_cpu_s"] == pytest.approx(0.8)
    assert summary["ours_step_over_forward_cpu"] == pytest.approx(2.0)
    verdicts = lm_common.verdicts(summary)
    assert verdicts[0].endswith("met") and "MISSED by 0.10" in verdicts[1]
    assert verdicts[2].endswith("met") and verdicts[3].endswith("met")
    missed = lm_common.verdicts(lm_common.summarize(_report(3000.0, 2000.0, 3.0, 2.0, 1.0, 1.0)))
    assert "MISSED by 0.50" in missed[0] and "MISSED by 0.50" in missed[2] and "MISSED by 0.80" in missed[3]
    text = lm_common.markdown(_report(1800.0, 2000.0, 2.0, 2.5, 1.0, 1.0))
    assert "| job peak RSS (MiB) | 1,800 | 2,000 | 0.90 |" in text
    assert "| first LoRA step (compiles ours) | 100 / 1,800 | 100 / 2,000 |" in text


class FakeSide:
    def __init__(self, setup, threads):
        self.setup, self.threads, self.calls = setup, threads, []
        self.block = None

    def phase_import(self):
        self.calls.append("import")

    def phase_read(self):
        self.block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, held

    def phase_build(self):
        self.block = None

    def phase_forward(self):
        raise RuntimeError("forward broke")

    def phase_first_step(self):
        pass

    @property
    def cases(self):
        return {"step": lambda: None, "forward": lambda: None}

    def info(self):
        return {"threads": self.threads}


def test_worker_serves_phases_with_their_memory_and_reports_errors():
    setup = LMSetup(gguf_path="g", batch_path="b", logits_dir="l").to_json()
    requests = [{"cmd": "phase", "name": "read"}, {"cmd": "init", "setup": setup}, {"cmd": "phase", "name": "read"},
                {"cmd": "phase", "name": "build"}, {"cmd": "phase", "name": "forward"},
                {"cmd": "phase", "name": "nope"}, {"cmd": "time", "case": "step", "iters": 3}, {"cmd": "info"},
                {"cmd": "quit"}, {"cmd": "info"}]
    replies = []
    lm_worker.serve("ours", 1, [json.dumps(r) for r in requests], replies.append,
                    factory=lambda side, s, threads: FakeSide(s, threads))
    assert len(replies) == 9  # nothing after quit
    assert not replies[0]["ok"] and "before 'init'" in replies[0]["error"]
    read, build = replies[2], replies[3]
    assert read["ok"] and build["ok"] and 0 < build["rss_mb"] <= read["rss_mb"]  # build frees the 64 MiB
    assert read["peak_mb"] >= read["rss_mb"] and build["peak_mb"] >= build["rss_mb"]
    assert not replies[4]["ok"] and "forward broke" in replies[4]["error"]
    assert not replies[5]["ok"] and "unknown phase" in replies[5]["error"]
    assert len(replies[6]["wall"]) == len(replies[6]["cpu"]) == 3
    assert replies[7]["info"] == {"threads": 1} and replies[8] == {"ok": True}


@needs_gguf
def test_dequantised_tensors_do_not_keep_the_file_mapped(tmp_path):
    from benchmarks.models import gguf_loader

    reader = gguf_loader._reader(write_tiny_gguf(tmp_path / "tiny.gguf"))
    tensors = gguf_loader.dequantized_tensors(reader)
    for name, tensor in zip((t.name for t in reader.tensors), reader.tensors):
        assert tensors[name].flags.owndata or not np.may_share_memory(tensors[name], tensor.data), name
        assert tensors[name].flags.c_contiguous and tensors[name].dtype == np.float32
    assert tensors["blk.1.attn_k.weight"].shape == (TINY["kv_heads"] * TINY["hidden"] // TINY["heads"],
                                                    TINY["hidden"])


@pytest.mark.skipif(bool(PEER_MISSING), reason=f"peer extra not installed ({', '.join(PEER_MISSING)} missing)")
def test_both_sides_give_the_same_logits_on_a_tiny_gguf(tmp_path):
    from benchmarks.peer import lm

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    code = lm.main(["--gguf", str(gguf), "--synthetic-batch", "--seq-len", "12", "--reps", "1",
                    "--settle", "0", "--output-dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "peer_lm.json").read_text())
    assert code == 0 and result["logits_check"]["ok"], result["logits_check"]
    assert result["logits_check"]["max_abs_diff"] < 1e-4
    assert result["info"]["ours"]["lora_trainable_parameters"] == result["info"]["theirs"]["lora_trainable_parameters"]
    assert set(result["report"]["ours"]["phases"]) == set(lm_common.PHASES) | {"steps", "forwards"}
    assert "LoRA step CPU time" in (tmp_path / "out" / "peer_lm.md").read_text()
