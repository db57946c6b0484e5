"""Training with the fused ops follows the composed loss trajectory (20 steps, same data).

LoRA dropout masks are drawn in numpy and fed per step: MindSpore's CPU Dropout is not
reproducible across instances after a few calls even with equal seeds, so equal trajectories need
equal masks given from outside (the op takes its mask from the caller, as LoRADense draws it).
"""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.kernels import Adapter, LoraLinear, LowRankAdapter
from kernel_testing import requires_fused

STEPS = 20
DROP = 0.1


def _param(rng, shape, scale, name, trainable=True):
    return Parameter(Tensor((rng.standard_normal(shape) * scale).astype(np.float32)), name=name,
                     requires_grad=trainable)


class _LoraNet(nn.Cell):
    """Frozen base Dense + LoRA (r=4, dropout 0.1) + ReLU + linear head."""

    def __init__(self, backend, d=48, n=32, r=4, classes=5):
        super().__init__()
        rng = np.random.default_rng(1)
        self.weight = _param(rng, (n, d), d ** -0.5, "weight", trainable=False)
        self.bias = _param(rng, (n,), 0.1, "bias", trainable=False)
        self.lora_a = _param(rng, (r, d), d ** -0.5, "lora_a")
        self.lora_b = _param(rng, (n, r), 0.1, "lora_b")
        self.head = _param(rng, (classes, n), n ** -0.5, "head")
        self.lora = LoraLinear(2.0, backend=backend)
        self.relu = nn.ReLU()

    def construct(self, x, mask):
        h = self.relu(self.lora(x, self.weight, self.bias, self.lora_a, self.lora_b, mask))
        return h.matmul(self.head.T)


class _AdapterNet(nn.Cell):
    """Adapter (gelu) or low-rank adapter (r=2) on the input, then a linear head."""

    def __init__(self, backend, low_rank, d=48, b=8, r=2, classes=5):
        super().__init__()
        rng = np.random.default_rng(2)
        self.low_rank = low_rank
        if low_rank:
            self.p = ms.ParameterTuple([_param(rng, (d, r), d ** -0.5, "dl"), _param(rng, (r, b), 0.5, "dr"),
                                        _param(rng, (b,), 0.1, "bd"), _param(rng, (b, r), 0.5, "ul"),
                                        _param(rng, (r, d), 0.1, "ur"), _param(rng, (d,), 0.1, "bu")])
            self.op = LowRankAdapter("gelu", backend=backend)
        else:
            self.p = ms.ParameterTuple([_param(rng, (b, d), d ** -0.5, "wd"), _param(rng, (b,), 0.1, "bd"),
                                        _param(rng, (d, b), 0.1, "wu"), _param(rng, (d,), 0.1, "bu")])
            self.op = Adapter("gelu", backend=backend)
        self.head = _param(rng, (classes, d), d ** -0.5, "head")

    def construct(self, x, mask):
        x = x * mask
        if self.low_rank:
            h = self.op(x, self.p[0], self.p[1], self.p[2], self.p[3], self.p[4], self.p[5])
        else:
            h = self.op(x, self.p[0], self.p[1], self.p[2], self.p[3])
        return h.matmul(self.head.T)


class _Loss(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, x, mask, label):
        return self.loss(self.net(x, mask), label)


def _trajectory(make_net, backend):
    net = make_net(backend)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((64, 48)).astype(np.float32))
    y = Tensor(rng.integers(0, 5, 64).astype(np.int32))
    masks = [Tensor(((rng.random((64, 48)) >= DROP) / (1 - DROP)).astype(np.float32)) for _ in range(STEPS)]
    # Momentum, not Adam: Adam turns ~1e-9 rounding noise in a near-zero gradient into a full step.
    step = nn.TrainOneStepCell(_Loss(net), nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9))
    step.set_train()
    losses = [float(step(x, m, y).asnumpy()) for m in masks]
    return np.array(losses), [p.asnumpy() for p in net.trainable_params()]


@requires_fused
@pytest.mark.parametrize("make_net", [_LoraNet, lambda b: _AdapterNet(b, False), lambda b: _AdapterNet(b, True)],
                         ids=["lora", "adapter", "low_rank_adapter"])
def test_fused_training_follows_composed(mode, make_net):
    fused_losses, fused_params = _trajectory(make_net, "fused")
    composed_losses, composed_params = _trajectory(make_net, "composed")
    assert fused_losses[-1] < fused_losses[0] - 0.1  # it learns
    np.testing.assert_allclose(fused_losses, composed_losses, rtol=2e-4, atol=2e-5)
    for pf, pc in zip(fused_params, composed_params):
        np.testing.assert_allclose(pf, pc, rtol=1e-3, atol=1e-4)
