"""Training and inference of a sequence classifier with ``mindspore.train.Model`` (fixed batch shapes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn
from mindspore.train import Callback, Model

from mindpet.delta import RDropLoss, rdrop_repeat

from benchmarks.lib.tasks import LabelledTokens

COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass(frozen=True)
class TrainSettings:
    """A bounded run: ``steps`` batches of ``batch_size`` drawn epoch by epoch (reshuffled) from the train split."""

    steps: int = 150
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.1
    seed: int = 0
    rdrop_alpha: float | None = None
    """R-Drop: each batch is doubled with ``rdrop_repeat`` and the loss is ``RDropLoss`` with this alpha."""

    def describe(self) -> dict:
        return {"steps": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "warmup_fraction": self.warmup_fraction, "seed": self.seed, "optimizer": "Adam",
                "schedule": "linear warmup, linear decay to 0", "rdrop_alpha": self.rdrop_alpha}


class ClassifierLoss(nn.Cell):
    """Mean softmax cross-entropy of a classifier taking ``(input_ids, attention_mask, token_type_ids)``.

    Built with ``auto_prefix=False`` so the wrapped network's parameter names are unchanged.
    """

    def __init__(self, network: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, input_ids, attention_mask, token_type_ids, labels):
        return self.loss(self.network(input_ids, attention_mask, token_type_ids), labels)


class RDropClassifierLoss(nn.Cell):
    """R-Drop: every example twice in one forward (``rdrop_repeat``; dropout differs between the copies),
    loss ``RDropLoss`` = cross-entropy + ``alpha`` x the symmetric KL of the two passes."""

    def __init__(self, network: nn.Cell, alpha: float) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss = RDropLoss()
        self.alpha = float(alpha)

    def construct(self, input_ids, attention_mask, token_type_ids, labels):
        input_ids, attention_mask, token_type_ids, labels = rdrop_repeat(input_ids, attention_mask,
                                                                         token_type_ids, labels)
        return self.loss(self.network(input_ids, attention_mask, token_type_ids), labels, self.alpha)


def batch_order(num_examples: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Example indices of ``steps`` full batches: concatenated per-epoch permutations from ``default_rng(seed)``."""
    if num_examples < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    per_epoch = num_examples // batch_size * batch_size
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // per_epoch)
    order = np.concatenate([rng.permutation(num_examples)[:per_epoch] for _ in range(epochs)])
    return order[:steps * batch_size]


class _Batches:
    """Random-access source of whole batches (each a tuple of contiguous int32 arrays)."""

    def __init__(self, data: LabelledTokens, index: np.ndarray, batch_size: int) -> None:
        self.data, self.index, self.batch_size = data, index, batch_size

    def __len__(self) -> int:
        return len(self.index) // self.batch_size

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        rows = self.index[i * self.batch_size:(i + 1) * self.batch_size]
        t = self.data.tokens.take(rows)
        return tuple(np.ascontiguousarray(a, dtype=np.int32)
                     for a in (t.input_ids, t.attention_mask, t.token_type_ids, self.data.labels[rows]))


def train_dataset(data: LabelledTokens, settings: TrainSettings) -> ds.Dataset:
    """Exactly ``settings.steps`` batches, in the deterministic order of :func:`batch_order`."""
    index = batch_order(len(data), settings.steps, settings.batch_size, settings.seed)
    return ds.GeneratorDataset(_Batches(data, index, settings.batch_size), column_names=list(COLUMNS),
                               shuffle=False)


def learning_rates(settings: TrainSettings) -> list[float]:
    """Per-step learning rate: linear warmup over ``warmup_fraction`` of the steps, then linear decay to 0."""
    warmup = max(1, int(round(settings.warmup_fraction * settings.steps)))
    rates = []
    for step in range(settings.steps):
        if step < warmup:
            rates.append(settings.learning_rate * (step + 1) / warmup)
        else:
            rates.append(settings.learning_rate * (settings.steps - step) / max(1, settings.steps - warmup))
    return rates


def train(network: nn.Cell, data: LabelledTokens, settings: TrainSettings,
          callbacks: Sequence[Callback]) -> nn.Optimizer:
    """Adam on ``network.trainable_params()`` (freeze first) through ``Model.train``, one pass over the batches
    (R-Drop loss when ``settings.rdrop_alpha`` is set). Returns the optimizer (its state is counted by
    :func:`static_memory`)."""
    params = network.trainable_params()
    if not params:
        raise ValueError("the network has no trainable parameters")
    optimizer = nn.Adam(params, learning_rate=learning_rates(settings))
    loss = ClassifierLoss(network) if settings.rdrop_alpha is None else RDropClassifierLoss(network,
                                                                                          settings.rdrop_alpha)
    model = Model(loss, optimizer=optimizer)
    network.set_train(True)
    model.train(1, train_dataset(data, settings), callbacks=list(callbacks), dataset_sink_mode=False)
    network.set_train(False)
    return optimizer


def _nbytes(param) -> int:
    return int(np.prod(param.shape)) * np.dtype(ms.dtype_to_nptype(param.dtype)).itemsize


def static_memory(network: nn.Cell, optimizer: nn.Optimizer | None = None) -> dict:
    """Exact bytes of the training state: every parameter, one gradient per trainable parameter, and the
    optimizer's own parameters (Adam: two moments per trainable parameter, the learning-rate schedule,
    step and beta powers). Without ``optimizer`` the Adam state is computed as 2 x the trainable bytes."""
    params = list(network.get_parameters())
    parameters = sum(_nbytes(p) for p in params)
    gradients = sum(_nbytes(p) for p in params if p.requires_grad)
    if optimizer is None:
        state = 2 * gradients
    else:
        own = {id(p) for p in params}
        state = sum(_nbytes(p) for _, p in optimizer.parameters_and_names() if id(p) not in own)
    return {"parameters": parameters, "gradients": gradients, "optimizer_state": state,
            "total": parameters + gradients + state}


def predict_logits(network: nn.Cell, data: LabelledTokens, batch_size: int) -> np.ndarray:
    """Logits ``[n, classes]`` in inference mode; the last batch is padded to ``batch_size`` (one graph)."""
    network.set_train(False)
    t = data.tokens
    outputs = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, start + batch_size)
        index = np.minimum(index, len(data) - 1)
        batch = t.take(index)
        logits = network(ms.Tensor(batch.input_ids), ms.Tensor(batch.attention_mask), ms.Tensor(batch.token_type_ids))
        outputs.append(logits.asnumpy()[:min(batch_size, len(data) - start)])
    return np.concatenate(outputs).astype(np.float32)


def parameter_counts(network: nn.Cell) -> dict:
    """Total, trainable, and delta (``mindpet_delta_`` in the name) element counts."""
    total = trainable = delta = 0
    for name, param in network.parameters_and_names():
        size = int(np.prod(param.shape))
        total += size
        trainable += size if param.requires_grad else 0
        delta += size if "mindpet_delta_" in name else 0
    return {"total": total, "trainable": trainable, "delta": delta,
            "trainable_percent": 100.0 * trainable / total, "delta_percent": 100.0 * delta / total}
