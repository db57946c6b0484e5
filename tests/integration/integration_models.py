"""Models shared by the integration tests: a tiny BERT (the benchmarks' port) and a small MLP.

The MLP has a float64 numpy reference, so values after injection, merging and loading are checked
against independent arithmetic.
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # the repository's ``benchmarks`` package (BERT port, HF name table)
    sys.path.insert(0, _ROOT)

from benchmarks.models.bert import BertClassifier, BertConfig  # noqa: E402
from benchmarks.models.hf_weights import hf_to_mindspore_name  # noqa: E402

TINY = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16)
HF_MODULES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense")


def tiny_bert(num_classes: int = 3, layers: int = TINY.num_hidden_layers) -> BertClassifier:
    """A randomly initialised BERT classifier (hidden 16, 2 layers), in eval mode, dropout off."""
    config = TINY if layers == TINY.num_hidden_layers else replace(TINY, num_hidden_layers=layers)
    net = BertClassifier(config, num_classes, head_dropout=0.0)
    net.set_train(False)
    return net


def bert_inputs(batch: int = 2, length: int = 6):
    rng = np.random.default_rng(5)
    ids = Tensor(rng.integers(0, TINY.vocab_size, (batch, length)).astype(np.int32))
    mask = np.ones((batch, length), np.int32)
    mask[1, -2:] = 0
    return ids, Tensor(mask), Tensor(np.zeros((batch, length), np.int32))


def bert_hf_name_map(num_layers: int = TINY.num_hidden_layers, prefix: str = "bert.") -> dict:
    """MindSpore module path of the port -> HF ``BertModel`` module name, built from the port's weight table.

    ``prefix`` is the port's path of the encoder: ``'bert.'`` in a ``BertClassifier``, ``''`` for a bare
    ``BertEncoder``.
    """
    mapping = {}
    for layer in range(num_layers):
        for module in HF_MODULES:
            hf = f"encoder.layer.{layer}.{module}"
            mapping[hf_to_mindspore_name(hf + ".weight", prefix)[:-len(".weight")]] = hf
    return mapping


class MLP(nn.Cell):
    """fc1 (ReLU) -> blocks[0] (no bias) -> tanh -> head."""

    def __init__(self, dtype=ms.float32):
        super().__init__()
        self.fc1 = nn.Dense(6, 5, activation="relu", dtype=dtype)
        self.blocks = nn.SequentialCell([nn.Dense(5, 4, has_bias=False, dtype=dtype), nn.Tanh()])
        self.head = nn.Dense(4, 3, dtype=dtype)
        rng = np.random.default_rng(11)
        for param in self.get_parameters():
            param.set_data(Tensor((rng.standard_normal(param.shape) * 0.5).astype(np.float32)).astype(dtype))
        self.set_train(False)

    def construct(self, x):
        return self.head(self.blocks(self.fc1(x)))


def f64(param) -> np.ndarray:
    return param.astype(ms.float32).asnumpy().astype(np.float64)


def mlp_reference(x: np.ndarray, p: dict, lora: dict = None) -> np.ndarray:
    """The MLP in float64; ``p`` maps parameter paths to arrays, ``lora`` maps a layer path to (s, A, B)."""
    lora = lora or {}

    def dense(h, path, bias=True):
        y = h @ p[path + ".weight"].T + (p[path + ".bias"] if bias else 0.0)
        if path in lora:
            s, a, b = lora[path]
            y = y + s * (h @ a.T) @ b.T
        return y

    h = np.maximum(dense(x.astype(np.float64), "fc1"), 0.0)
    h = np.tanh(dense(h, "blocks.0", bias=False))
    return dense(h, "head")


def randomize(net: nn.Cell, pattern: str = "mindpet_delta_", seed: int = 3, scale: float = 0.5) -> None:
    """Set every parameter whose name contains ``pattern`` to random values (e.g. make LoRA B non-zero)."""
    rng = np.random.default_rng(seed)
    for name, param in net.parameters_and_names():
        if pattern in name:
            param.set_data(Tensor((rng.standard_normal(param.shape) * scale).astype(np.float32)).astype(param.dtype))
