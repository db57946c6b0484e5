"""LoRADense's LoRA-dropout mask source: on the fused CPU kernels the mask comes from MindSpore's generator as
the ``dropout_mask`` op's mask of a key the kernel receives (``dropout_mask_source == 'generator'``), else from
the layer's own Dropout primitive. Forward and every gradient with dropout against float64 numpy with the mask
recomputed by the numpy reference of the op (GRAPH and PYNATIVE), the quantised base, successive calls,
reproducibility under ``mindspore.set_seed``, and different masks per layer in a shared ``lazy_inline`` block
graph."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta.lora import LoRADense
from mindpet.kernels import backend as kbackend, generator_state
from mindpet.quant import QuantizedDense, quantize
from dropout_reference import mask_reference

pytestmark = pytest.mark.skipif(kbackend.fused_implementation("CPU")[0] != "cpu",
                                reason="mindpet CPU kernel library not built")

K, N, R, P = 24, 16, 4, 0.3
SCALE = 8 / R


def _layer(backend="fused", p=P, seed=0, **kw):
    layer = LoRADense(K, N, R, 8, p, compute_dtype=ms.float32, backend=backend, **kw)
    rng = np.random.default_rng(seed)
    for param in layer.get_parameters():
        param.set_data(Tensor((rng.standard_normal(param.shape) * 0.3).astype(np.float32)))
    return layer


def _expected_mask(layer, shape, offset):
    """The mask a call with the generator at ``offset`` draws (the op's numpy reference)."""
    cell = layer.generator_dropout
    return mask_reference(shape, layer.lora_dropout_p, cell.stream_value, offset - cell.base_value)


class _Grads(nn.Cell):
    """``(sum(y * cot), (d/dx, d/d params))`` in one graph, one forward (as a training step)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.value_and_grad = ops.value_and_grad(self.loss, 0, ms.ParameterTuple(layer.trainable_params()))

    def loss(self, x, cot):
        return (self.layer(x) * cot).sum()

    def construct(self, x, cot):
        return self.value_and_grad(x, cot)


def test_the_mask_source_follows_the_backend():
    assert _layer().dropout_mask_source == "generator"
    assert _layer("composed").dropout_mask_source == "primitive"
    bf16 = LoRADense(K, N, R, 8, P, compute_dtype=ms.bfloat16)  # no fused kernel: composed
    assert bf16.backend == "composed" and bf16.dropout_mask_source == "primitive"
    sharded = _layer().shard(strategy_lora_dropout=((1, 1),))  # switches to composed: the primitive's strategy
    assert sharded.dropout_mask_source == "primitive"
    layer = _layer()
    assert layer.lora_dropout.dropout is layer.lora_dropout  # the primitive and its alias stay (mindformers' shard)
    layer = _layer(None)  # auto
    assert layer.dropout_mask_source == "generator"
    layer.matmul = ops.MatMul(transpose_b=False)  # mindformers' handover of an [in, out] Linear: composed
    assert layer.backend == "composed" and layer.dropout_mask_source == "primitive"
    assert "generator_dropout" not in layer.name_cells()
    with pytest.raises(AttributeError):
        _layer().dropout_mask_source = "primitive"


# pylint: disable-next=unused-argument
def test_forward_and_gradients_with_dropout_match_float64_with_the_generator_mask(mode):
    layer = _layer()
    layer.set_train(True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, K)).astype(np.float32)
    cot = rng.standard_normal((3, 5, N)).astype(np.float32)
    w, b, a, bb = (p.asnumpy().astype(np.float64) for p in
                   (layer.weight, layer.bias, layer.mindpet_delta_lora_a, layer.mindpet_delta_lora_b))
    step = _Grads(layer)
    x2 = x.reshape(15, K).astype(np.float64)
    g = cot.reshape(15, N).astype(np.float64)
    masks = []
    for _ in range(2):  # successive steps: new counters, new masks, still the formula
        offset = generator_state()[1]
        y = layer(Tensor(x)).asnumpy().reshape(15, N)
        mask = _expected_mask(layer, (15, K), offset)
        np.testing.assert_allclose(y, x2 @ w.T + b + SCALE * ((x2 * mask) @ a.T) @ bb.T, rtol=1e-5, atol=1e-5)
        offset = generator_state()[1]
        loss, (grad_x, grads_p) = step(Tensor(x), Tensor(cot))
        assert generator_state()[1] == offset + 15 * K  # one draw of numel(x2d) per step
        mask = _expected_mask(layer, (15, K), offset)
        masks.append(mask)
        xd = x2 * mask
        expected = x2 @ w.T + b + SCALE * (xd @ a.T) @ bb.T
        np.testing.assert_allclose(float(loss.asnumpy()), (expected * g).sum(), rtol=1e-5)
        grads = dict(zip([p.name.split(".")[-1] for p in layer.trainable_params()], [t.asnumpy() for t in grads_p]))
        np.testing.assert_allclose(grad_x.asnumpy().reshape(15, K),
                                   g @ w + SCALE * ((g @ bb) @ a) * mask, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads["mindpet_delta_lora_a"], SCALE * (g @ bb).T @ xd, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads["mindpet_delta_lora_b"], SCALE * g.T @ (xd @ a.T), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads["weight"], g.T @ x2, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads["bias"], g.sum(0), rtol=1e-5, atol=1e-5)
        assert 0 < (mask == 0).mean() < 1
    assert not np.array_equal(masks[0], masks[1])


def test_eval_mode_draws_nothing(mode):  # pylint: disable=unused-argument
    layer = _layer()
    layer.set_train(False)
    offset = generator_state()[1]
    x = np.random.default_rng(1).standard_normal((4, K)).astype(np.float32)
    y = layer(Tensor(x)).asnumpy()
    assert generator_state()[1] == offset
    w, b, a, bb = (p.asnumpy().astype(np.float64) for p in
                   (layer.weight, layer.bias, layer.mindpet_delta_lora_a, layer.mindpet_delta_lora_b))
    np.testing.assert_allclose(y, x @ w.T + b + SCALE * (x @ a.T) @ bb.T, rtol=1e-5, atol=1e-5)


def test_quantized_base_draws_its_mask_from_the_generator(mode):  # pylint: disable=unused-argument
    rng = np.random.default_rng(0)
    kq = 64  # a multiple of q8_0's group size
    base = QuantizedDense.from_quantized(quantize((rng.standard_normal((N, kq)) * 0.2).astype(np.float32), "q8_0"),
                                         bias=None, compute_dtype=ms.float32, backend="fused")
    layer = LoRADense(kq, N, R, 8, P, has_bias=False, compute_dtype=ms.float32, backend="fused", base=base)
    layer.mindpet_delta_lora_a.set_data(Tensor(rng.standard_normal((R, kq)).astype(np.float32)))
    layer.mindpet_delta_lora_b.set_data(Tensor(rng.standard_normal((N, R)).astype(np.float32)))
    assert layer.dropout_mask_source == "generator"
    assert LoRADense(kq, N, R, 8, P, has_bias=False, compute_dtype=ms.float32, backend="composed",
                     base=base).dropout_mask_source == "primitive"
    x = rng.standard_normal((6, kq)).astype(np.float32)
    y_eval = layer(Tensor(x)).asnumpy()
    layer.set_train(True)
    offset = generator_state()[1]
    y_train = layer(Tensor(x)).asnumpy()
    mask = _expected_mask(layer, (6, kq), offset)
    a, bb = layer.mindpet_delta_lora_a.asnumpy().astype(np.float64), layer.mindpet_delta_lora_b.asnumpy()
    # the base part is the same in both calls: the difference is the LoRA branch's dropout alone
    expected = SCALE * ((x * mask - x) @ a.T) @ bb.astype(np.float64).T
    np.testing.assert_allclose(y_train - y_eval, expected, rtol=1e-4, atol=1e-4)


def _two_calls(global_seed):
    """Two training calls of a LoRADense built right after ``mindspore.set_seed(global_seed)``."""
    ms.set_seed(global_seed)
    layer = _layer()
    layer.set_train(True)
    x = Tensor(np.ones((8, K), np.float32))
    return [layer(x).asnumpy() for _ in range(2)]


def test_the_same_seed_gives_the_same_masks(mode):  # pylint: disable=unused-argument
    first = _two_calls(3)
    again = _two_calls(3)  # the same process, the generator's offset further on: the same masks
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # successive calls draw new masks
    assert not np.array_equal(first[0], _two_calls(4)[0])  # another seed, other masks


class _SharedBlock(nn.Cell):
    """One LoRADense per block with A = B = I, W = 0, s = 1: the block returns ``x * mask``."""

    @ms.lazy_inline(policy="front")
    def __init__(self):
        super().__init__()
        self.lora = LoRADense(K, K, K, K, 0.5, weight_init="zeros", lora_a_init=Tensor(np.eye(K, dtype=np.float32)),
                              lora_b_init=Tensor(np.eye(K, dtype=np.float32)), has_bias=False,
                              compute_dtype=ms.float32, backend="fused")

    def construct(self, x):
        return self.lora(x)


class _Stack(nn.Cell):
    def __init__(self, n):
        super().__init__()
        self.blocks = nn.CellList([_SharedBlock() for _ in range(n)])

    def construct(self, x):
        outs = ()
        for block in self.blocks:
            outs = outs + (block(x),)
        return outs


def test_layers_of_a_shared_block_graph_draw_different_masks():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    stack = _Stack(3)
    stack.set_train(True)
    x = Tensor(np.ones((16, K), np.float32))
    first = stack.blocks[0].lora
    seen = []
    for _ in range(2):
        offset = generator_state()[1]
        masks = [m.asnumpy() for m in stack(x)]
        for k, mask in enumerate(masks):  # the first block's constants, each call site its own counters
            np.testing.assert_array_equal(mask, _expected_mask(first, (16, K), offset + k * 16 * K).astype(np.float32))
        seen.extend(masks)
    assert len({m.tobytes() for m in seen}) == len(seen)  # every layer, every step: a different mask
