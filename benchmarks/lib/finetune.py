"""One delta fine-tuning run: load pre-trained BERT, plug in the delta, freeze, train, save, evaluate, then
reload pre-trained + delta in a fresh process (:mod:`benchmarks.lib.reload_check`) and evaluate again.

The data (:class:`~benchmarks.lib.tasks.ClassificationTask`) and the model (:class:`PretrainedBert`) are
arguments, so the same path runs on MiniLM + BBC headlines and on a tiny synthetic model in the tests.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import mindspore as ms
from mindspore.train import CheckpointConfig

from mindpet.graph import TrainableParamsCheckPoint, freeze_delta

from benchmarks.lib import metrics
from benchmarks.lib.callbacks import StepRecorder
from benchmarks.models.bert import BertClassifier, BertConfig, DenseFactory
from benchmarks.models.hf_weights import load_hf_weights
from benchmarks.lib.outputs import write_json
from benchmarks.lib.reload_check import reload_in_subprocess, write_request
from benchmarks.lib.tasks import ClassificationTask, LabelledTokens
from benchmarks.lib.training import TrainSettings, parameter_counts, predict_logits, static_memory, train

HEAD_PATTERN = "*head*"
CKPT_PREFIX = "delta"


class DeltaMethod(Protocol):
    freeze_mode: str | None

    def dense_factory(self) -> DenseFactory: ...

    def build(self, config: BertConfig, num_classes: int) -> BertClassifier: ...

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class PretrainedBert:
    """A BERT config and its HuggingFace-named safetensors weights."""

    name: str
    config: BertConfig
    weights: Path

    @classmethod
    def from_dir(cls, root: Path, name: str | None = None) -> "PretrainedBert":
        root = Path(root)
        return cls(name or root.name, BertConfig.from_json(root / "config.json"), root / "model.safetensors")


def build_classifier(pretrained: PretrainedBert, num_classes: int, method: DeltaMethod) -> BertClassifier:
    """The classifier with the delta layers plugged in and every pre-trained weight loaded (head new)."""
    net = method.build(pretrained.config, num_classes)
    load_hf_weights(net, pretrained.weights)
    return net


def apply_freeze(net: BertClassifier, method: DeltaMethod) -> int:
    """``freeze_delta(net, method.freeze_mode, exclude=['*head*'])`` (nothing for full fine-tuning);
    returns how many parameters were frozen."""
    if method.freeze_mode is None:
        return 0
    return len(freeze_delta(net, method.freeze_mode, exclude=[HEAD_PATTERN]).frozen)


def _scores(logits: np.ndarray, data: LabelledTokens, num_classes: int) -> dict:
    predictions = logits.argmax(-1)
    return {"accuracy": metrics.accuracy(data.labels, predictions),
            "macro_f1": metrics.macro_f1(data.labels, predictions, num_classes)}


def _clear(directory: Path) -> None:
    for old in directory.glob(f"{CKPT_PREFIX}*"):
        old.unlink()


def _seeded_model(pretrained: PretrainedBert, task: ClassificationTask, method: DeltaMethod,
                  settings: TrainSettings) -> tuple[BertClassifier, int, dict]:
    """GRAPH mode on CPU, seeds from ``settings``, the classifier with ``method`` applied and frozen:
    ``(network, number of parameters frozen, parameter counts)``."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(settings.seed)
    np.random.seed(settings.seed)
    net = build_classifier(pretrained, task.num_classes, method)
    frozen = apply_freeze(net, method)
    return net, frozen, parameter_counts(net)


def run_finetune(task: ClassificationTask, pretrained: PretrainedBert, method: DeltaMethod,
                 settings: TrainSettings, output_dir: Path, progress: bool = True) -> dict:
    """Train ``method`` on ``task`` and return a JSON-ready summary (plus the fine-tuned and reloaded logits
    under the non-JSON key ``"_arrays"``). The delta checkpoint goes to ``output_dir/ckpt``, the reload
    request and its files to ``output_dir``."""
    start = time.perf_counter()
    net, frozen, counts = _seeded_model(pretrained, task, method, settings)
    timing = {"build_s": time.perf_counter() - start}

    t = time.perf_counter()
    before = _scores(predict_logits(net, task.test, settings.batch_size), task.test, task.num_classes)
    timing["eval_before_s"] = time.perf_counter() - t

    ckpt_dir = Path(output_dir) / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _clear(ckpt_dir)
    recorder = StepRecorder(settings.steps, progress=progress, description=f"{task.name} {method.freeze_mode}")
    saver = TrainableParamsCheckPoint(str(ckpt_dir), prefix=CKPT_PREFIX,
                                      config=CheckpointConfig(save_checkpoint_steps=settings.steps,
                                                              keep_checkpoint_max=1))
    t = time.perf_counter()
    train(net, task.train, settings, [recorder, saver])
    timing["train_s"] = time.perf_counter() - t
    timing["step_s_median"] = recorder.steady_step_seconds()
    delta_path = Path(saver.latest_ckpt_file_name)

    t = time.perf_counter()
    tuned_logits = predict_logits(net, task.test, settings.batch_size)
    after = _scores(tuned_logits, task.test, task.num_classes)
    timing["eval_after_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tokens = task.test.tokens
    request = write_request(Path(output_dir), config=asdict(pretrained.config), weights=pretrained.weights,
                            method=method.describe(), num_classes=task.num_classes, delta=delta_path,
                            tokens={"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
                                    "token_type_ids": tokens.token_type_ids, "labels": task.test.labels},
                            batch_size=settings.batch_size)
    reloaded_logits, report, _ = reload_in_subprocess(request)
    reloaded = _scores(reloaded_logits, task.test, task.num_classes)
    timing["reload_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - start

    losses = recorder.losses
    window = max(1, min(10, len(losses) // 4))
    return {
        "task": task.describe(),
        "model": {"name": pretrained.name, **asdict(pretrained.config)},
        "method": method.describe(),
        "settings": settings.describe(),
        "parameters": counts,
        "frozen_by_freeze_delta": frozen,
        "majority_accuracy": metrics.majority_accuracy(task.train.labels, task.test.labels),
        "before": before,
        "after": after,
        "reloaded": reloaded,
        "reload_max_abs_logit_diff": float(np.abs(reloaded_logits - tuned_logits).max()),
        "reload_report": {"missing": report["missing"], "overridden": len(report["overridden"])},
        "delta_checkpoint": {"path": str(delta_path), "bytes": delta_path.stat().st_size,
                             "tensors": len(ms.load_checkpoint(str(delta_path)))},
        "loss": {"first": losses[0], "last": losses[-1], "mean_first": float(np.mean(losses[:window])),
                 "mean_last": float(np.mean(losses[-window:])), "window": window, "per_step": losses},
        "timing": timing,
        "_arrays": {"tuned_logits": tuned_logits, "reloaded_logits": reloaded_logits},
    }


def write_summary(summary: dict, path: Path) -> Path:
    """Write the JSON part of a :func:`run_finetune` summary (keys starting with '_' dropped)."""
    path = Path(path)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    return write_json(path, public, indent=2)


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def steady_step_seconds(step_seconds: list[float], warmup: int | None = None) -> float:
    """Median step time after ``warmup`` steps (default: 10 % of the steps, at least 2 - the first step
    compiles the graph); all steps but the first when the run is shorter."""
    if not step_seconds:
        return float("nan")
    warmup = max(2, len(step_seconds) // 10) if warmup is None else warmup
    if warmup >= len(step_seconds):
        warmup = 1 if len(step_seconds) > 1 else 0
    return float(np.median(step_seconds[warmup:]))


def run_row(task: ClassificationTask, pretrained: PretrainedBert, method: DeltaMethod, settings: TrainSettings,
            progress: bool = True, label: str | None = None) -> dict:
    """One row of the benchmark table (meant to run alone in its own process): build, freeze, train, evaluate
    the test split; parameter counts, exact static bytes, resident memory and per-step times. No
    checkpoint or reload (:func:`run_finetune` covers that path)."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    net, frozen, counts = _seeded_model(pretrained, task, method, settings)
    head = sum(int(np.prod(p.shape)) for n, p in net.parameters_and_names() if n.startswith("head."))
    counts["method"] = counts["trainable"] - head
    counts["method_percent"] = 100.0 * counts["method"] / counts["total"]
    rss_ready = _rss_bytes()
    backends = sorted({str(cell.backend) for _, cell in net.cells_and_names() if hasattr(cell, "backend")})
    timing = {"build_s": time.perf_counter() - start}

    recorder = StepRecorder(settings.steps, progress=progress, description=label or method.describe()["method"])
    t = time.perf_counter()
    optimizer = train(net, task.train, settings, [recorder])
    timing["train_s"] = time.perf_counter() - t
    timing["step_s_median"] = steady_step_seconds(recorder.step_seconds)
    timing["first_step_s"] = recorder.step_seconds[0]
    timing["step_cpu_s_median"] = steady_step_seconds(recorder.step_cpu_seconds)
    rss_after_train = _rss_bytes()
    peak_train = _peak_rss_bytes()

    t = time.perf_counter()
    logits = predict_logits(net, task.test, settings.batch_size)
    scores = _scores(logits, task.test, task.num_classes)
    timing["eval_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - start
    timing["cpu_s"] = time.process_time() - cpu_start

    static = static_memory(net, optimizer)
    losses = recorder.losses
    window = max(1, min(10, len(losses) // 4))
    epochs = settings.steps * settings.batch_size / len(task.train)
    return {
        "task": task.describe(),
        "model": {"name": pretrained.name, **asdict(pretrained.config)},
        "method": method.describe(),
        "hyperparameters": method.hyperparameters(),
        "kernel_backends": backends,
        "settings": settings.describe(),
        "epochs": epochs,
        "parameters": counts,
        "frozen_by_freeze_delta": frozen,
        "majority_accuracy": metrics.majority_accuracy(task.train.labels, task.test.labels),
        "test": scores,
        "memory": {"static": static, "rss_ready": rss_ready, "rss_after_train": rss_after_train,
                   "peak_rss_train": peak_train, "peak_rss": _peak_rss_bytes(),
                   "dynamic": max(0, peak_train - rss_ready - static["gradients"] - static["optimizer_state"])},
        "loss": {"first": losses[0], "last": losses[-1], "mean_first": float(np.mean(losses[:window])),
                 "mean_last": float(np.mean(losses[-window:])), "window": window, "per_step": losses},
        "step_seconds": recorder.step_seconds,
        "step_cpu_seconds": recorder.step_cpu_seconds,
        "timing": timing,
    }
