"""The classification suite end to end on a tiny random BERT and synthetic tokens (no packages needed):
two rows, each trained in its own worker process, then the JSON / Markdown / PNG outputs and their columns.
Also the method rows' parameter counts and the exact static-memory arithmetic."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from safetensors.numpy import save_file

from benchmarks import suite
from benchmarks.lib.finetune import build_classifier, apply_freeze, PretrainedBert
from benchmarks.models.bert import BertConfig
from benchmarks.lib.tasks import ClassificationTask
from benchmarks.lib.training import parameter_counts, static_memory
from bert_reference import random_hf_state
from test_quick_job import TINY, _synthetic

STEPS = 8
BATCH = 16
# hidden 64: the low-rank adapter's reduction factor 32 needs hidden >= 32
WIDE = dict(TINY, hidden_size=64, intermediate_size=128)


def _pretrained(tmp, config):
    rng = np.random.default_rng(0)
    save_file(random_hf_state(config, rng, scale=0.1), str(tmp / "model.safetensors"))
    return PretrainedBert("tiny", BertConfig.from_dict(config), tmp / "model.safetensors")


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    pretrained = _pretrained(tmp, TINY)
    rng = np.random.default_rng(1)
    task = ClassificationTask("synthetic", ("a", "b", "c"), _synthetic(96, rng), _synthetic(40, rng))
    task_path = suite.save_task_npz(task, tmp / "task.npz")
    profile = suite.Profile("test", ("lora", "full"), (0,), STEPS)
    out = tmp / "results"
    summary = suite.run_suite(profile, {"kind": "npz", "path": str(task_path)},
                              {"name": "tiny", "config": asdict(pretrained.config), "weights": str(pretrained.weights)},
                              out, progress=False, batch_size=BATCH, log=lambda _: None)
    return summary, out


def test_outputs_are_written(suite_run):
    summary, out = suite_run
    loaded = json.loads((out / "suite.json").read_text())
    assert [row["row"] for row in loaded["table"]] == ["full", "lora"]  # full first, for the ratios
    assert len(loaded["runs"]) == 2 and (out / "suite_runs" / "lora_seed0.json").is_file()
    text = (out / "suite.md").read_text()
    assert "| Full fine-tuning |" in text and "| LoRA |" in text and "## Targets" in text
    assert "acc / full" in text and "step / full" in text and "CPU / full" in text and "peak RSS MB" in text
    header = next(line for line in text.splitlines() if line.startswith("| method | hyper"))
    assert all(line.count("|") == header.count("|") for line in text.splitlines()
               if line.startswith("| Full fine-tuning |") or line.startswith("| LoRA | r="))
    assert (out / "suite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert loaded["meta"]["steps"] == STEPS and loaded["meta"]["seeds"] == [0]


def test_columns_are_sane(suite_run):
    summary, _ = suite_run
    full, lora = summary["table"]
    assert full["accuracy_vs_full"][0] == 1.0 and full["step_vs_full"][0] == 1.0
    assert full["trainable_percent"] == 100.0
    h, r, layers = TINY["hidden_size"], 8, TINY["num_hidden_layers"]
    assert lora["parameters"]["method"] == layers * 2 * 2 * r * h  # A and B of query and value
    assert 0 < lora["method_percent"] < lora["trainable_percent"] < 100
    for e in (full, lora):
        s = e["static_bytes"]
        assert s["parameters"] == 4 * e["parameters"]["total"]
        assert s["gradients"] == 4 * e["parameters"]["trainable"]
        # Adam: two moments per trainable parameter + the per-step lr schedule, step counter, beta powers
        assert s["optimizer_state"] == 2 * s["gradients"] + 4 * STEPS + 4 + 4 + 4
        assert s["total"] == s["parameters"] + s["gradients"] + s["optimizer_state"]
        assert e["peak_rss_bytes"] > s["total"] and e["dynamic_bytes"] >= 0
        assert 0.0 <= e["accuracy"][0] <= 1.0 and 0.0 <= e["macro_f1"][0] <= 1.0
        assert e["step_s"][0] > 0 and e["epochs"] == pytest.approx(STEPS * BATCH / 96)
        assert e["step_cpu_s"][0] > 0 and e["step_cpu_vs_full"][0] > 0
    assert lora["static_bytes"]["total"] < full["static_bytes"]["total"]
    assert [c["target"] for c in lora["targets"]][2:] == [
        "step time / full <= 0.6", "step CPU time / full <= 0.6 (load-robust cross-check)",
        "peak memory / full <= 0.7"]
    for check in lora["targets"]:
        assert check["met"] in (True, False) and (check["met"] or check["note"].startswith("missed by"))


def test_resume_reuses_an_identical_finished_run(suite_run):
    summary, out = suite_run
    first = summary["runs"][1]
    again = suite.run_one(suite.ROWS["lora"], 0, STEPS, first_request(out)["task"], first_request(out)["pretrained"],
                          out / "suite_runs", progress=False, batch_size=BATCH, resume=True)
    assert again["process"]["reused"] is True and again["test"] == first["test"]
    assert first_request(out)["omp_wait_policy"] == suite._subprocess_env()["OMP_WAIT_POLICY"]
    assert again["threads"]["OMP_WAIT_POLICY"] == first_request(out)["omp_wait_policy"]  # what the worker ran with


def test_resume_does_not_reuse_a_run_made_under_another_openmp_wait_policy(suite_run, monkeypatch, tmp_path):
    out = tmp_path / "copy"  # run_one rewrites the request file; keep the shared run intact
    shutil.copytree(suite_run[1] / "suite_runs", out / "suite_runs")
    policy = first_request(out)["omp_wait_policy"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE" if policy != "ACTIVE" else "PASSIVE")

    class Retrained(Exception):
        pass

    def no_worker(*args, **kwargs):
        raise Retrained

    monkeypatch.setattr(suite.subprocess, "run", no_worker)
    with pytest.raises(Retrained):
        suite.run_one(suite.ROWS["lora"], 0, STEPS, first_request(out)["task"], first_request(out)["pretrained"],
                      out / "suite_runs", progress=False, batch_size=BATCH, resume=True)


def first_request(out):
    return json.loads((out / "suite_runs" / "lora_seed0.request.json").read_text())


def test_target_notes_say_by_how_much():
    assert suite._check("x", 0.95, 0.98, True)["note"].startswith("missed by 0.03")
    assert suite._check("x", 0.5, 0.6, False)["note"] == "met"
    assert suite._check("x", 0.75, 0.6, False)["note"].startswith("missed by 0.15")


def test_cli_profiles():
    args = suite.parse_args(["--full", "--rows", "lora,bitfit", "--seeds", "3", "--steps", "5"])
    p = suite.profile_from_args(args)
    assert (p.name, p.rows, p.seeds, p.steps) == ("full", ("lora", "bitfit"), (3,), 5)
    quick = suite.profile_from_args(suite.parse_args([]))
    assert quick.name == "quick" and {"full", "lora", "bitfit", "adapter"} <= set(quick.rows)
    assert set(suite.PROFILES["full"].rows) == set(suite.ROWS) and len(suite.PROFILES["full"].seeds) == 3
    with pytest.raises(SystemExit):
        suite.profile_from_args(suite.parse_args(["--rows", "nope"]))


def test_method_rows_train_what_they_should(tmp_path):
    """Each row's trainable set after freeze_delta, counted against the layer formulas."""
    pretrained = _pretrained(tmp_path, WIDE)
    h, inner, layers, heads = WIDE["hidden_size"], WIDE["intermediate_size"], WIDE["num_hidden_layers"], 2
    head = 3 * h + 3
    expected = {
        "adapter": layers * (2 * h * 64 + 64 + h),                          # FFN output adapter, bottleneck 64
        "low_rank_adapter": 2 * layers * (h + 2 + 2 + 2 + h + h),          # k = 64 / 32 = 2, rank 1, two per layer
        "bitfit": layers * (4 * h + inner + h + 2 * h) + h,                # dense biases + LayerNorm betas
        "prefix": 10 * h + h * 128 + 128 + 128 * layers * 2 * h + layers * 2 * h,
        "prompt": 20 * h,
    }
    for name, count in expected.items():
        net = build_classifier(pretrained, 3, suite.ROWS[name].method())
        apply_freeze(net, suite.ROWS[name].method())
        counts = parameter_counts(net)
        assert counts["trainable"] - head == count, name
        assert static_memory(net)["optimizer_state"] == 2 * 4 * counts["trainable"]
    del heads


@pytest.mark.parametrize("name", ["prefix", "prompt"])
def test_prefix_and_prompt_change_the_output_only_through_their_parameters(tmp_path, name):
    import mindspore as ms

    pretrained = _pretrained(tmp_path, WIDE)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(2)
    data = _synthetic(4, rng).tokens
    args = [ms.Tensor(a) for a in (data.input_ids, data.attention_mask, data.token_type_ids)]
    plain = build_classifier(pretrained, 3, suite.ROWS["bitfit"].method())
    net = build_classifier(pretrained, 3, suite.ROWS[name].method())
    ms.load_param_into_net(net, {n: p for n, p in plain.parameters_and_names() if n.startswith("head.")})
    plain.set_train(False)
    net.set_train(False)
    with_delta = net(*args).asnumpy()
    assert with_delta.shape == (4, 3)
    assert np.abs(with_delta - plain(*args).asnumpy()).max() > 1e-4  # the prefix / prompt is seen
