"""Evaluate a delta checkpoint in a fresh process: pre-trained weights + delta -> test logits.

This is how a fine-tuned delta is used after training (nothing from the training process survives but
the files), so the quick job verifies its reload here rather than in the training process.

    python -m benchmarks.lib.reload_check <request.json>

The request names the pre-trained HF safetensors file, the BERT config, the method, the delta
checkpoint, the test tokens (``.npz``) and where to write the logits (``.npz``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.lib.outputs import save_npz, write_json
from benchmarks.lib.threads import with_repository_on_path

REQUEST = "reload_request.json"


def write_request(directory: Path, *, config: dict, weights: Path, method: dict, num_classes: int,
                  delta: Path, tokens: dict[str, np.ndarray], batch_size: int) -> Path:
    """Write the request and its test tokens into ``directory``; returns the request path."""
    directory.mkdir(parents=True, exist_ok=True)
    save_npz(directory / "reload_tokens.npz", **tokens)
    request = {"config": config, "weights": str(weights), "method": method, "num_classes": num_classes,
               "delta": str(delta), "tokens": str(directory / "reload_tokens.npz"),
               "logits": str(directory / "reload_logits.npz"), "batch_size": batch_size}
    path = directory / REQUEST
    write_json(path, request, indent=2)
    return path


def evaluate_request(request_path: Path) -> dict:
    """Build the model, load pre-trained + delta (strict), predict, write the logits; returns the load report."""
    import mindspore as ms
    from mindpet.graph import load_pretrained_and_delta

    from benchmarks.data.tokenize import EncodedBatch
    from benchmarks.lib.methods import method_from_description
    from benchmarks.models.bert import BertConfig
    from benchmarks.models.hf_weights import convert_hf_file
    from benchmarks.lib.tasks import LabelledTokens
    from benchmarks.lib.training import predict_logits

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    method = method_from_description(request["method"])
    net = method.build(BertConfig.from_dict(request["config"]), request["num_classes"])
    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_hf_file(request["weights"], Path(tmp) / "pretrained.safetensors")
        report = load_pretrained_and_delta(net, converted, request["delta"], strict=True)
    with np.load(request["tokens"]) as t:
        data = LabelledTokens(EncodedBatch(t["input_ids"], t["attention_mask"], t["token_type_ids"]), t["labels"])
    save_npz(request["logits"], logits=predict_logits(net, data, request["batch_size"]))
    return {"missing": report.missing_keys, "overridden": report.overridden_keys}


def reload_in_subprocess(request_path: Path, timeout: float = 900.0) -> tuple[np.ndarray, dict, float]:
    """Run :func:`evaluate_request` in a new Python process; returns (logits, load report, seconds)."""
    env = with_repository_on_path(dict(os.environ))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "benchmarks.lib.reload_check", str(request_path)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"reload check failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    with np.load(request["logits"]) as out:
        return out["logits"], report, seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(evaluate_request(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
