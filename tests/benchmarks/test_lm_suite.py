"""The LM suite's path end to end on a tiny random LLaMA and synthetic tokens (no offline packages needed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import lm_suite
from benchmarks.lib import lm_data, lm_model, lm_profile, lm_training


def test_chunking_and_held_out_selection():
    chunks = lm_data.chunk_stream([[5, 6, 7], [8, 9], [10, 11, 12, 13]], seq_len=4, separator=0)
    np.testing.assert_array_equal(chunks, [[5, 6, 7, 0], [8, 9, 0, 10]])  # 11, 12, 13 dropped
    picked = lm_data.evenly_spaced(np.arange(10)[:, None], 4)
    np.testing.assert_array_equal(picked[:, 0], [0, 3, 6, 9])


def test_learning_rate_schedule():
    rates = lm_training.learning_rates(1.0, 10, 0.2)
    assert rates[:2] == [0.5, 1.0] and rates[-1] == 1.0 / 8 and max(rates) == 1.0


def test_synthetic_suite_writes_tables(tmp_path):
    code = lm_suite.main(["--quick", "--model", "synthetic", "--in-process", "--no-progress", "--steps", "8",
                          "--heldout-chunks", "2", "--seq-len", "32", "--output-dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "lm_results.json").read_text())
    rows = {r["method"]: r for r in report["results"]}
    assert list(rows) == list(lm_profile.METHODS)
    total = rows["zero_shot"]["parameters"]["total"]
    assert rows["zero_shot"]["parameters"]["trainable"] == 0
    # exactly the delta parameters train: 20 prompt vectors; 10 prefix positions x layers x K/V x KV heads x
    # head_dim; LoRA A (8 x in) and B (out x 8) on q and v of both layers
    assert rows["prompt"]["parameters"]["trainable"] == 20 * 32
    assert rows["prefix"]["parameters"]["trainable"] == 10 * 2 * 2 * 2 * 8
    assert rows["lora"]["parameters"]["trainable"] == 2 * (8 * 32 + 32 * 8 + 8 * 32 + 16 * 8)
    assert rows["prompt"]["parameters"]["total"] == total + 20 * 32
    for r in rows.values():
        assert math.isfinite(r["heldout_ppl"]) and 1.0 < r["heldout_ppl"] < 2 * 64
        assert r["static_bytes"] == 4 * (r["parameters"]["total"] + 3 * r["parameters"]["trainable"])
        assert r["peak_rss_mb"] > 0
    for name in ("prompt", "prefix", "lora"):
        assert len(rows[name]["loss"]["per_step"]) == 8 and rows[name]["step_s_median"] > 0
    # prompt tuning on a learnable chain lowers held-out perplexity below zero-shot within 8 steps
    assert rows["prompt"]["heldout_ppl"] < rows["zero_shot"]["heldout_ppl"]
    table = (tmp_path / "lm_table.md").read_text()
    assert "| prefix |" in table and "held-out ppl" in table


def test_seeds_are_summarised_and_resume_reuses_identical_runs(tmp_path, monkeypatch, capsys):
    argv = ["--quick", "--model", "synthetic", "--in-process", "--no-progress", "--steps", "3", "--heldout-chunks",
            "2", "--seq-len", "16", "--methods", "zero_shot,prompt", "--seeds", "0,1", "--output-dir", str(tmp_path)]
    assert lm_suite.main(argv) == 0
    assert sorted(p.name for p in tmp_path.glob("lm_*_seed*.json")) == [
        "lm_prompt_seed0.json", "lm_prompt_seed1.json", "lm_zero_shot_seed0.json"]  # zero-shot: one run
    report = json.loads((tmp_path / "lm_results.json").read_text())
    summary = {e["method"]: e for e in report["summary"]}
    runs = [r for r in report["results"] if r["method"] == "prompt"]
    assert [r["profile"]["seed"] for r in runs] == [0, 1] and summary["prompt"]["seeds"] == [0, 1]
    ppl = [r["heldout_ppl"] for r in runs]
    zero = summary["zero_shot"]["heldout_ppl"][0]
    assert ppl[0] != ppl[1]  # the seed changes the data order and the run
    mean, std = summary["prompt"]["heldout_ppl"]
    assert math.isclose(mean, np.mean(ppl)) and math.isclose(std, np.std(ppl, ddof=1))
    assert math.isclose(summary["prompt"]["vs_zero_shot"][0], np.mean(ppl) / zero)
    assert summary["prompt"]["below_zero_shot_every_seed"] == all(p < zero for p in ppl)
    assert "| prompt | 0,1 |" in (tmp_path / "lm_table.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("--resume re-ran a finished run")

    monkeypatch.setattr(lm_suite, "run_method", no_training)
    capsys.readouterr()
    assert lm_suite.main(argv + ["--resume"]) == 0
    assert capsys.readouterr().out.count("reusing") == 3
    again = json.loads((tmp_path / "lm_results.json").read_text())
    assert [r["heldout_ppl"] for r in again["results"]] == [r["heldout_ppl"] for r in report["results"]]
    # a different request (more steps) is not reused
    with pytest.raises(AssertionError, match="re-ran"):
        lm_suite.main([a if a != "3" else "4" for a in argv] + ["--resume"])


# ------------------------------------------------------------------------------------- parallel workers (--jobs)
# (cpu_groups and run_workers themselves: tests/benchmarks/test_runner.py)

def _cpus_or_skip(n):
    import os
    if len(os.sched_getaffinity(0)) < n:
        pytest.skip(f"needs {n} usable CPUs, this process has {len(os.sched_getaffinity(0))}")


def test_jobs_is_validated_before_anything_runs(tmp_path, capsys):
    import os
    usable = len(os.sched_getaffinity(0))
    for argv, message in ((["--jobs", "0"], "--jobs must be between 1 and"),
                          (["--jobs", str(usable + 1)], f"got {usable + 1}"),
                          (["--jobs", "2", "--in-process"], "cannot be combined with --in-process")):
        if usable < 2 and "--in-process" in argv:
            continue
        with pytest.raises(SystemExit):
            lm_suite.main(["--model", "synthetic", "--output-dir", str(tmp_path)] + argv)
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_synthetic_suite_with_two_jobs_runs_each_worker_on_its_own_cpu(tmp_path):
    _cpus_or_skip(2)
    argv = ["--quick", "--model", "synthetic", "--jobs", "2", "--steps", "2", "--heldout-chunks", "2",
            "--seq-len", "16", "--methods", "zero_shot,prompt", "--output-dir", str(tmp_path)]
    assert lm_suite.main(argv) == 0
    report = json.loads((tmp_path / "lm_results.json").read_text())
    assert [r["method"] for r in report["results"]] == ["zero_shot", "prompt"]
    threads = [r["threads"] for r in report["results"]]
    assert all(len(t["cpus"]) == 1 and t["OMP_NUM_THREADS"] == "1" and t["OMP_WAIT_POLICY"] == "PASSIVE"
               for t in threads)
    assert threads[0]["cpus"] != threads[1]["cpus"]  # both started at once, each on its own CPU
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["prompt_seed_0.log", "zero_shot_seed_0.log"]


def test_lora_on_quantized_base_rows(tmp_path):
    """lora_q4 (lora_q8 differs only in the format): the projections are QuantizedDense (LoRA on q/v), the same delta trains, the frozen base
    is stored smaller, and perplexity matches LoRA on the float base closely (q4: the same values)."""
    from mindpet.graph import freeze_delta
    from mindpet.quant import QuantizedDense

    profile = lm_profile.Profile(seq_len=16, steps=3, heldout_chunks=2)
    pretrained, data = lm_suite._load("synthetic", profile, "lora_q4")
    net = lm_model.build("lora_q4", pretrained, data, profile)
    q_proj, k_proj = net.layers[0].attention.q_proj, net.layers[0].attention.k_proj
    assert q_proj.quantized_base and isinstance(k_proj, QuantizedDense) and k_proj.format == "q4_1"
    assert net.quantized_embedding and net.embed_tokens.head.format == "q5_0"  # the tied table, re-encoded (default)
    freeze_delta(net, "lora")
    sizes = lm_training.parameter_sizes(net)
    assert sizes["trainable"] == 2 * (8 * 32 + 32 * 8 + 8 * 32 + 16 * 8)
    assert sizes["projection_bytes"] < 0.5 * sizes["projection_float32_bytes"]

    argv = ["--quick", "--model", "synthetic", "--in-process", "--no-progress", "--steps", "3", "--heldout-chunks",
            "2", "--seq-len", "16", "--methods", "lora,lora_q4", "--output-dir", str(tmp_path)]
    assert lm_suite.main(argv) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "lm_results.json").read_text())["results"]}
    assert rows["lora_q4"]["parameters"] == rows["lora"]["parameters"]
    assert rows["lora_q4"]["frozen_base_bytes"] < rows["lora"]["frozen_base_bytes"]
    # the projections' float32 size is the same model's, whatever the format (the quantised tied head is no projection)
    assert rows["lora_q4"]["projection_float32_bytes"] == rows["lora"]["projection_float32_bytes"]
    assert abs(rows["lora_q4"]["heldout_ppl"] / rows["lora"]["heldout_ppl"] - 1) < 0.05
    assert "| lora_q4 |" in (tmp_path / "lm_table.md").read_text()


NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0])
LUTS = {"nf4": NF4, "q4_0": np.arange(16) - 8.0, "q4_1": np.arange(16, dtype=np.float64),
        "q5_0": np.arange(32) - 16.0}


def _table_f64(q):
    """The whole table dequantised in float64 from the layout alone (4-bit: low nibble first; 5-bit: then + 16 x
    bit k % 8 of byte K / 2 + k // 8; v * d (+ m))."""
    if q.format in LUTS:
        k = q.shape[1]
        v = np.stack([q.codes[:, :k // 2] & 0xF, q.codes[:, :k // 2] >> 4], axis=-1).reshape(q.codes.shape[0], -1)
        if q.format == "q5_0":
            v = v + 16 * np.unpackbits(q.codes[:, k // 2:], axis=1, bitorder="little")
        v = LUTS[q.format][v]
    else:
        v = q.codes.astype(np.float64)
    n, k = v.shape
    g = k // q.scales.shape[1]
    w = v.reshape(n, -1, g) * q.scales.astype(np.float64)[..., None]
    if q.offsets is not None:
        w = w + q.offsets.astype(np.float64)[..., None]
    return w.reshape(n, k)


@pytest.mark.parametrize("fmt", ["q8_0", "q5_0", "q4_1", "q4_0", "nf4"])
def test_quantized_tied_embedding_rows_are_the_dequantised_table(mode, fmt):
    """The lora_q4/lora_q8 models' embedding gathers the tokens' rows of the quantised table (the GGUF's q8_0,
    or a 5-/4-bit re-encoding) and dequantises only them: equal to the rows of the whole table dequantised in
    float64 by numpy; the tied head's logits are h deq(E)^T."""
    from mindspore import Tensor
    from mindpet.quant import quantize

    q = quantize(np.random.default_rng(0).standard_normal((100, 128)).astype(np.float32), fmt)
    ids = np.array([[3, 7, 99], [0, 5, 5]], np.int32)
    table = _table_f64(q)
    cell = lm_model.quantized_tied_embedding(q)
    out = cell(Tensor(ids)).asnumpy()
    np.testing.assert_allclose(out, table[ids], rtol=1e-6, atol=1e-7)
    h = np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32)
    np.testing.assert_allclose(cell.head(Tensor(h)).asnumpy(), h.astype(np.float64) @ table.T, rtol=1e-4, atol=1e-4)


def test_q4_embedding_re_encodes_the_tied_table_of_lora_q4_only(tmp_path):
    """``--q4-embedding q4_1``: lora_q4's tied embedding/head is re-encoded to 4 bits (smaller frozen base, the
    setting recorded in the request); lora_q8 keeps the table as stored (q8_0); the default is q5_0, between."""
    profile = lm_profile.Profile(seq_len=16, steps=1, heldout_chunks=1, q4_embedding="q4_1")
    pretrained, data = lm_suite._load("synthetic", profile, "lora_q4")
    assert lm_model.build("lora_q4", pretrained, data, profile).embed_tokens.head.format == "q4_1"
    pretrained, data = lm_suite._load("synthetic", profile, "lora_q8")
    assert lm_model.build("lora_q8", pretrained, data, profile).embed_tokens.head.format == "q8_0"

    base = ["--quick", "--model", "synthetic", "--in-process", "--no-progress", "--steps", "1", "--heldout-chunks",
            "1", "--seq-len", "16", "--methods", "lora_q4"]
    assert lm_suite.main(base + ["--q4-embedding", "q8_0", "--output-dir", str(tmp_path / "q8")]) == 0
    assert lm_suite.main(base + ["--q4-embedding", "q4_1", "--output-dir", str(tmp_path / "q4")]) == 0
    assert lm_suite.main(base + ["--output-dir", str(tmp_path / "q5")]) == 0
    rows = [json.loads((tmp_path / d / "lm_results.json").read_text())["results"][0] for d in ("q8", "q4", "q5")]
    assert [r["profile"]["q4_embedding"] for r in rows] == ["q8_0", "q4_1", "q5_0"]
    assert rows[1]["frozen_base_bytes"] < rows[2]["frozen_base_bytes"] < rows[0]["frozen_base_bytes"]
    with pytest.raises(SystemExit):
        lm_suite.main(base + ["--q4-embedding", "q2", "--output-dir", str(tmp_path / "x")])


def test_loss_cells_are_next_token_cross_entropy_and_its_gradient(mode):
    """MeanLoss / TokenNLL (the fused SparseSoftmaxCrossEntropyWithLogits) against float64 numpy: the mean and
    the sum of -log softmax(logits[t])[ids[t + 1]], and d mean / d logits = (softmax - onehot) / n at every
    position but the last (which predicts nothing: zero gradient)."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn

    rng = np.random.default_rng(3)
    batch, length, vocab = 2, 5, 11
    logits = rng.standard_normal((batch, length, vocab)).astype(np.float32) * 3
    ids = rng.integers(0, vocab, (batch, length)).astype(np.int32)

    class FixedLogits(nn.Cell):
        def __init__(self):
            super().__init__()
            self.logits = Parameter(Tensor(logits), name="logits")

        def construct(self, input_ids):
            return self.logits * 1.0

    TokenNLL, MeanLoss = lm_training._cells()
    net = FixedLogits()
    x = logits.astype(np.float64)
    logp = x - x.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], 2)[..., 0]
    n = batch * (length - 1)
    np.testing.assert_allclose(float(MeanLoss(net)(Tensor(ids)).asnumpy()), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(TokenNLL(net)(Tensor(ids)).asnumpy()), nll.sum(), rtol=1e-5)
    grad = ms.grad(MeanLoss(net), grad_position=None, weights=net.trainable_params())(Tensor(ids))[0].asnumpy()
    expected = np.exp(logp)
    expected[:, :-1] -= np.eye(vocab)[ids[:, 1:]]
    expected[:, :-1] /= n
    expected[:, -1] = 0.0
    np.testing.assert_allclose(grad, expected, atol=1e-6)
