"""The ``dropout_mask`` op (``ops/CONTRACTS.md`` 10): the CPU kernel against an independent numpy re-implementation
of its counter hash (exact), its values and kept fraction, p = 0, determinism and the counter semantics (shape-
and thread-split-independent), GRAPH and PYNATIVE, float32 and float16; ``DropoutMask`` on MindSpore's default
generator; argument checks."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from mindpet.kernels import DropoutMask, dropout_mask, generator_state
from dropout_reference import mask_reference
from kernel_testing import requires_fused

pytestmark = requires_fused


class _Graph(nn.Cell):
    """The op's primitive with explicit seed and offset, compiled (GRAPH mode)."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.fwd = DropoutMask(p).fwd

    def construct(self, x, seed, offset):
        return self.fwd(x, seed, offset, self.p)


def _mask(mode, shape, p, seed, offset, dtype=np.float32):
    x = Tensor(np.zeros(shape, dtype))
    if mode == ms.GRAPH_MODE:
        return _Graph(p)(x, Tensor(seed, ms.int64), Tensor(offset, ms.int64)).asnumpy()
    return dropout_mask(x, p, seed, offset).asnumpy()


@pytest.mark.parametrize("shape,p,seed,offset", [
    ((37, 300), 0.3, 12345, 4000),          # crosses row-key blocks of 4096 counters mid-tensor
    ((1, 5), 0.05, 0, 0),
    ((4, 4096), 0.5, -7, 4095),             # negative seed (int64 -> uint64), offset at a block's last counter
    ((3, 2, 9), 0.9, 2 ** 62 + 1, 2 ** 63 - 10),  # the counter wraps past 2^64
])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_mask_equals_the_numpy_hash_exactly(mode, shape, p, seed, offset, dtype):
    got = _mask(mode, shape, p, seed, offset, dtype)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, mask_reference(shape, p, seed, offset).astype(dtype))


def test_values_are_zero_or_the_kept_scale_and_the_kept_fraction_is_one_minus_p(mode):
    p, n = 0.3, 1 << 20
    got = _mask(mode, (n,), p, 99, 5)
    kept_value = np.float32(1.0 / (1.0 - np.float32(p)))
    assert set(np.unique(got)) == {0.0, kept_value}
    # binomial: std of the kept fraction sqrt(p (1 - p) / n) = 4.5e-4; 10 std
    assert abs(float((got > 0).mean()) - (1 - p)) < 5e-3


def test_p_zero_keeps_everything(mode):
    np.testing.assert_array_equal(_mask(mode, (17, 33), 0.0, 5, 6), np.ones((17, 33), np.float32))


def test_same_seed_and_offset_give_the_same_mask_and_others_differ(mode):
    a = _mask(mode, (64, 64), 0.5, 1, 0)
    np.testing.assert_array_equal(a, _mask(mode, (64, 64), 0.5, 1, 0))
    assert not np.array_equal(a, _mask(mode, (64, 64), 0.5, 2, 0))            # another seed
    assert not np.array_equal(a, _mask(mode, (64, 64), 0.5, 1, 64 * 64))      # the next counters


def test_the_mask_depends_on_the_counters_only(pynative):  # pylint: disable=unused-argument
    """Element i is keyed by offset + i: the shape does not matter and consecutive calls tile one stream."""
    whole = _mask(ms.PYNATIVE_MODE, (6000,), 0.25, 3, 100)
    np.testing.assert_array_equal(_mask(ms.PYNATIVE_MODE, (40, 150), 0.25, 3, 100).reshape(-1), whole)
    parts = [_mask(ms.PYNATIVE_MODE, (2500,), 0.25, 3, 100), _mask(ms.PYNATIVE_MODE, (3500,), 0.25, 3, 2600)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_a_threaded_call_equals_the_reference(pynative):  # pylint: disable=unused-argument
    shape = ((1 << 22) + 5,)  # at or above the elementwise threading threshold: chunks on a team
    np.testing.assert_array_equal(_mask(ms.PYNATIVE_MODE, shape, 0.1, 11, 3),
                                  mask_reference(shape, 0.1, 11, 3).astype(np.float32))


def test_empty_input_gives_an_empty_mask(pynative):  # pylint: disable=unused-argument
    assert _mask(ms.PYNATIVE_MODE, (0, 8), 0.5, 1, 0).shape == (0, 8)


class _Drawn(nn.Cell):
    def __init__(self, p, stream):
        super().__init__()
        self.mask = DropoutMask(p, stream=stream)

    def construct(self, x):
        return self.mask(x), self.mask(x)


def test_dropout_mask_cell_draws_from_the_default_generator(mode):
    """Seed ``stream``, counters from ``offset - base``: the generator's offset, which advances by numel(x) per
    call site (its seed is not used: see the module docstring of mindpet.kernels.dropout)."""
    p, shape, stream = 0.4, (7, 50), 123456789
    cell = _Drawn(p, stream)
    base = int(cell.mask.base.asnumpy())
    x = Tensor(np.zeros(shape, np.float32))
    for _ in range(2):
        _, offset = generator_state()
        first, second = cell(x)
        assert generator_state()[1] == offset + 2 * 350
        for mask, start in ((first, offset), (second, offset + 350)):
            expected = mask_reference(shape, p, stream, start - base).astype(np.float32)
            np.testing.assert_array_equal(mask.asnumpy(), expected)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def test_bad_arguments_are_rejected_naming_them(pynative):  # pylint: disable=unused-argument
    x = Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="'x' must be a float32 or float16 Tensor, but got a Int32 Tensor"):
        dropout_mask(Tensor(np.zeros((2, 3), np.int32)), 0.1, 0, 0)
    with pytest.raises(TypeError, match="'x' must be a float32 or float16 Tensor, but got ndarray"):
        dropout_mask(np.zeros((2, 3), np.float32), 0.1, 0, 0)
    for p in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"'p' must be in \[0, 1\)"):
            dropout_mask(x, p, 0, 0)
    with pytest.raises(TypeError, match="'p' must be a float, but got bool"):
        dropout_mask(x, True, 0, 0)
    with pytest.raises(TypeError, match="'seed' must be an int or an int64 Tensor, but got float"):
        dropout_mask(x, 0.1, 1.5, 0)
    with pytest.raises(TypeError, match="'offset' must be an int or an int64 Tensor of 1 element, but got a Int32"):
        dropout_mask(x, 0.1, 0, Tensor(3, ms.int32))
    with pytest.raises(ValueError, match="'seed' must fit in int64"):
        dropout_mask(x, 0.1, 2 ** 63, 0)
    with pytest.raises(ValueError, match=r"'stream' must be an int in \[0, 2\^63\)"):
        DropoutMask(0.1, stream=-1)
    with pytest.raises(ValueError, match="no composed implementation"):
        DropoutMask(0.1, backend="composed")
    np.testing.assert_array_equal(dropout_mask(x, 0.1, Tensor(4, ms.int64), Tensor([9], ms.int64)).asnumpy(),
                                  mask_reference((2, 3), 0.1, 4, 9).astype(np.float32))
