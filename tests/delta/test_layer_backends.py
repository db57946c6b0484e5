"""The delta layers on the fused kernels vs composed primitives: same parameters, names, checkpoints and
results (forward, every parameter gradient, 20 training steps), and backend selection at construction.

Each comparison builds the same layer twice (``backend='fused'`` and ``backend='composed'``) with the same
parameter values. LoRA dropout masks are fixed from outside (MindSpore's CPU Dropout is not reproducible
across instances): the layer's mask source is replaced (:func:`_fix_mask`): the Dropout primitive by a Cell
returning ``(x * mask, mask)`` (what the composed path, ``dropout(x)``, and the fused path's primitive source
read); a fused CPU layer (``dropout_mask_source == 'generator'``, whose kernel takes a dropout key) is switched
to that source.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta.adapter import AdapterDense, AdapterLayer
from mindpet.delta.lora import LoRADense
from mindpet.delta.low_rank_adapter import LowRankAdapterDense, LowRankAdapterLayer
from mindpet.kernels import _library, backend as kbackend

FUSED_OK = kbackend.fused_implementation("CPU")[0] == "cpu"
requires_fused = pytest.mark.skipif(not FUSED_OK, reason="mindpet CPU kernel library not built")

D_IN, D = 24, 40  # odd-ish sizes; M = 3 * 5 rows
LORA_P = 0.25


def _lora(b, dt, p=0.0, act=None, cdt=None):
    return LoRADense(D_IN, D, 4, 8, p, param_init_type=dt, compute_dtype=cdt or dt, activation=act, backend=b)


def _adapter_layer(b, dt, act="gelu", cdt=None):
    return AdapterLayer(D, 8, act, dt, cdt or dt, backend=b)


def _adapter_dense(b, dt, act="gelu", cdt=None):
    return AdapterDense(D_IN, D, activation="relu", bottleneck_size=8, non_linearity=act, param_init_type=dt,
                        compute_dtype=cdt or dt, backend=b)


def _low_rank_layer(b, dt, act="gelu", cdt=None):
    return LowRankAdapterLayer(D, 4, 3, non_linearity=act, param_init_type=dt, compute_dtype=cdt or dt, backend=b)


def _low_rank_dense(b, dt, act="gelu", cdt=None):
    return LowRankAdapterDense(D_IN, D, activation="relu", reduction_factor=4, low_rank_size=3, non_linearity=act,
                               param_init_type=dt, compute_dtype=cdt or dt, backend=b)


MAKERS = {  # name -> (make(backend, dtype, **kw), input feature size)
    "lora": (_lora, D_IN), "adapter_layer": (_adapter_layer, D), "adapter_dense": (_adapter_dense, D_IN),
    "low_rank_layer": (_low_rank_layer, D), "low_rank_dense": (_low_rank_dense, D_IN),
}
NAMES = list(MAKERS)
_NP = {ms.float32: np.float32, ms.float16: np.float16}


@pytest.fixture(autouse=True)
def _clean_choice(monkeypatch):
    monkeypatch.delenv(kbackend.ENV_VAR, raising=False)
    kbackend.set_backend(None)
    yield
    kbackend.set_backend(None)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


class _FixedMask(nn.Cell):
    """Stands in for ``ops.Dropout``: ``(x * mask, mask)`` with a given mask."""

    def __init__(self, mask: np.ndarray):
        super().__init__()
        self.mask = Tensor(mask)

    def construct(self, x):
        return x * self.mask, self.mask


def _fix_mask(layer, mask: np.ndarray) -> None:
    """Make ``layer`` (a LoRADense) drop with ``mask`` whatever its mask source (the generator source hands the
    kernel a dropout key, not a mask: such a layer is switched to its Dropout primitive)."""
    layer._generator_masks = False  # pylint: disable=protected-access
    layer.lora_dropout = _FixedMask(mask)


def _values(layer, seed=7):
    """Deterministic non-trivial values for every parameter (adapters are not the identity then)."""
    rng = np.random.default_rng(seed)
    return {p.name: (rng.standard_normal(p.shape) * 0.3).astype(_NP[p.dtype])
            for p in layer.get_parameters()}


def _set(layer, values):
    for p in layer.get_parameters():
        p.set_data(Tensor(values[p.name]))


def _pair(name, dtype=ms.float32, **kw):
    """The same layer with the fused and the composed backend, equal parameter values."""
    make, _ = MAKERS[name]
    fused, composed = make("fused", dtype, **kw), make("composed", dtype, **kw)
    values = _values(fused)
    _set(fused, values)
    _set(composed, values)
    return fused, composed


def _x(name, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((3, 5, MAKERS[name][1])).astype(dtype)


class _ValueAndGrads(nn.Cell):
    """Outputs of several layers and the gradients of ``sum_i sum(layer_i(x_i) * cot_i)`` for every x_i and
    every trainable parameter (one graph for all layers: one compilation in GRAPH mode)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.CellList(layers)
        self.params = ms.ParameterTuple(self.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)

    def outputs(self, *xs):
        return tuple(layer(x) for layer, x in zip(self.layers, xs))

    def loss(self, *args):  # x_1..x_n, cot_1..cot_n
        total = 0
        n = len(self.layers)
        for y, cot in zip(self.outputs(*args[:n]), args[n:]):
            total = total + (y * cot).sum()
        return total

    def construct(self, *args):
        return self.outputs(*args[:len(self.layers)]), self.grad(self.loss, self.params)(*args)


def _value_and_grads(layers, xs, cots):
    """Per layer: (output, {'x' or parameter name: gradient}) as numpy arrays."""
    names = [[p.name for p in layer.trainable_params()] for layer in layers]  # before wrapping adds prefixes
    outs, (in_grads, param_grads) = _ValueAndGrads(layers)(*[Tensor(a) for a in list(xs) + list(cots)])
    result, k = [], 0
    for i, layer_names in enumerate(names):
        grads = {"x": in_grads[i].asnumpy()}
        for name in layer_names:
            grads[name] = param_grads[k].asnumpy()
            k += 1
        result.append((outs[i].asnumpy(), grads))
    assert k == len(param_grads)
    return result


def _close(actual, expected, rel, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(actual - expected).max())
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel} * {scale:.3g}"


# ----------------------------------------------------------------------------- forward and gradients
@requires_fused
@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_fused_matches_composed_forward_and_all_gradients(mode, dtype):  # pylint: disable=unused-argument
    """Every layer, with input, parameters and compute in ``dtype``; every parameter trainable."""
    pairs = [_pair(name, dtype) for name in NAMES]
    assert all(f.backend == "cpu" and c.backend == "composed" for f, c in pairs)
    np_dt = _NP[dtype]
    xs = [_x(name, np_dt) for name in NAMES]
    cots = [np.random.default_rng(5 + i).standard_normal((3, 5, D)).astype(np_dt) for i in range(len(NAMES))]
    rel = 1e-4 if dtype == ms.float32 else 1e-2
    fused = _value_and_grads([f for f, _ in pairs], xs, cots)
    composed = _value_and_grads([c for _, c in pairs], xs, cots)
    for name, (out_f, grads_f), (out_c, grads_c), (layer, _) in zip(NAMES, fused, composed, pairs):
        assert out_f.dtype == out_c.dtype == np_dt
        _close(out_f, out_c, rel, f"{name} forward")
        assert list(grads_f) == list(grads_c) and len(grads_f) == len(layer.trainable_params()) + 1
        for key, g in grads_c.items():
            assert np.abs(g).max() > 0, f"{name} d/d {key}"  # every gradient is exercised
            _close(grads_f[key], g, rel, f"{name} d/d {key}")


@requires_fused
def test_default_precision_float32_input_float16_compute(pynative):  # pylint: disable=unused-argument
    """The layers' defaults: float32 input and parameters, float16 compute_dtype. Every layer runs the fused op
    in float16; the adapters add the residual in float32, as composed does."""
    for i, name in enumerate(NAMES):
        fused, composed = _pair(name, ms.float32, cdt=ms.float16)
        x = _x(name)
        cot = np.random.default_rng(5 + i).standard_normal((3, 5, D)).astype(np.float32)
        (out_f, grads_f), = _value_and_grads([fused], [x], [cot])
        (out_c, grads_c), = _value_and_grads([composed], [x], [cot])
        assert out_f.dtype == np.float32
        _close(out_f, out_c, 1e-2, f"{name} forward")
        for key, g in grads_c.items():
            _close(grads_f[key], g, 2e-2, f"{name} d/d {key}")


@requires_fused
@pytest.mark.parametrize("frozen", [(), ("weight", "bias"), ("weight",)],
                         ids=["base-trainable", "base-frozen", "bias-trainable"])
def test_lora_dropout_with_equal_masks_and_frozen_base(mode, frozen):  # pylint: disable=unused-argument
    """Dropout on (same mask for both), activation outside the kernel, base frozen or not (BitFit: bias only)."""
    fused, composed = _pair("lora", p=LORA_P, act="gelu")
    mask = ((np.random.default_rng(9).random((15, D_IN)) >= LORA_P) / (1 - LORA_P)).astype(np.float32)
    assert fused.dropout_mask_source == "generator" and composed.dropout_mask_source == "primitive"
    for layer in (fused, composed):
        _fix_mask(layer, mask)
        layer.set_train(True)
        for attr in frozen:
            getattr(layer, attr).requires_grad = False
    x = _x("lora")
    cot = np.random.default_rng(5).standard_normal((3, 5, D)).astype(np.float32)
    (out_f, grads_f), = _value_and_grads([fused], [x], [cot])
    (out_c, grads_c), = _value_and_grads([composed], [x], [cot])
    _close(out_f, out_c, 1e-4, "forward")
    expected_keys = {"x", "mindpet_delta_lora_a", "mindpet_delta_lora_b", "weight", "bias"} - set(frozen)
    assert set(grads_c) == set(grads_f) == expected_keys
    for key, g in grads_c.items():
        _close(grads_f[key], g, 1e-4, f"d/d {key}")


@requires_fused
def test_fresh_adapters_are_still_the_identity_when_fused():
    x = _x("adapter_layer")
    for layer in (AdapterLayer(D, 8, backend="fused"), LowRankAdapterLayer(D, 4, 3, backend="fused")):
        assert layer.backend == "cpu"
        assert np.array_equal(layer(Tensor(x)).asnumpy(), x)


@requires_fused
def test_lora_merged_branch_bypasses_the_kernel():
    fused, composed = _pair("lora")
    x = Tensor(_x("lora"))
    before = fused(x).asnumpy()
    assert fused.merge() and composed.merge()
    np.testing.assert_array_equal(fused(x).asnumpy(), composed(x).asnumpy())  # both run the Dense alone
    _close(fused(x).asnumpy(), before, 1e-4, "merged")
    fused.unmerge()
    composed.unmerge()


# ----------------------------------------------------------------------------- names and checkpoints
@requires_fused
def test_names_and_checkpoints_do_not_depend_on_the_backend(tmp_path, pynative):  # pylint: disable=unused-argument
    for name in NAMES:
        fused, composed = _pair(name)
        names = [n for n, _ in fused.parameters_and_names()]
        assert names == [n for n, _ in composed.parameters_and_names()], name
        assert [p.name for p in fused.get_parameters()] == [p.name for p in composed.get_parameters()], name
        assert [p.name for p in fused.trainable_params()] == [p.name for p in composed.trainable_params()], name
        path = str(tmp_path / f"{name}.ckpt")
        ms.save_checkpoint(fused, path)
        saved = ms.load_checkpoint(path)
        assert sorted(saved) == sorted(names), name
        target = MAKERS[name][0]("composed", ms.float32)  # other (random) values until loaded
        not_loaded, _ = ms.load_param_into_net(target, saved)
        assert not not_loaded, name
        x = Tensor(_x(name))
        _close(target(x).asnumpy(), fused(x).asnumpy(), 1e-4, f"{name} loaded into composed")
        np.testing.assert_array_equal(target(x).asnumpy(), composed(x).asnumpy())


# ----------------------------------------------------------------------------- training
class _TrainStep(nn.Cell):
    """One Momentum step on the sum of the layers' MSE losses; returns each layer's loss (one graph)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.CellList(layers)
        # Momentum, not Adam: Adam turns tiny rounding noise in a near-zero gradient into a full step.
        self.opt = nn.Momentum(self.trainable_params(), learning_rate=0.02, momentum=0.9)
        self.value_and_grad = ops.value_and_grad(self.losses, None, self.opt.parameters, has_aux=True)

    def losses(self, xs, targets):
        per_layer = tuple(((layer(x) - t) ** 2).mean() for layer, x, t in zip(self.layers, xs, targets))
        total = 0
        for loss in per_layer:
            total = total + loss
        return total, per_layer

    def construct(self, xs, targets):
        (_, per_layer), grads = self.value_and_grad(xs, targets)
        self.opt(grads)
        return per_layer


def _trajectories(layers):
    """(steps, layers) losses of 20 steps, and each layer's trained parameters."""
    names = [[p.name for p in layer.trainable_params()] for layer in layers]
    xs = tuple(Tensor(_x(name, seed=12)) for name in NAMES)
    rng = np.random.default_rng(11)
    targets = tuple(Tensor(rng.standard_normal((3, 5, D)).astype(np.float32)) for _ in NAMES)
    step = _TrainStep(layers)
    step.set_train()
    losses = np.array([[float(v.asnumpy()) for v in step(xs, targets)] for _ in range(20)])
    params = [dict(zip(n, [p.asnumpy() for p in layer.trainable_params()])) for n, layer in zip(names, layers)]
    return losses, params


@requires_fused
def test_20_training_steps_follow_the_composed_trajectory():
    """Each layer trained 20 steps (LoRA with dropout on, one fixed mask for both backends)."""
    pairs = [_pair(name, **({"p": LORA_P} if name == "lora" else {})) for name in NAMES]
    mask = ((np.random.default_rng(9).random((15, D_IN)) >= LORA_P) / (1 - LORA_P)).astype(np.float32)
    for layer in pairs[NAMES.index("lora")]:
        _fix_mask(layer, mask)
    losses_f, params_f = _trajectories([f for f, _ in pairs])
    losses_c, params_c = _trajectories([c for _, c in pairs])
    for i, name in enumerate(NAMES):
        assert losses_c[-1, i] < 0.97 * losses_c[0, i], name  # it learns
        np.testing.assert_allclose(losses_f[:, i], losses_c[:, i], rtol=1e-4, atol=1e-6, err_msg=name)
        for key, value in params_c[i].items():
            np.testing.assert_allclose(params_f[i][key], value, rtol=1e-3, atol=1e-5, err_msg=f"{name} {key}")


# ----------------------------------------------------------------------------- selection
@requires_fused
@pytest.mark.parametrize("name", NAMES)
def test_precedence_at_construction(name, monkeypatch):
    make = MAKERS[name][0]
    assert make(None, ms.float32).backend == "cpu"  # auto on CPU with the library built
    monkeypatch.setenv(kbackend.ENV_VAR, "composed")
    assert make(None, ms.float32).backend == "composed"
    kbackend.set_backend("fused")  # global setting wins over the environment
    assert make(None, ms.float32).backend == "cpu"
    assert make("composed", ms.float32).backend == "composed"  # per layer wins over global
    kbackend.set_backend("composed")
    assert make("auto", ms.float32).backend == "cpu"
    layer = make("fused", ms.float32)
    assert "backend=cpu" in repr(layer)
    with pytest.raises(AttributeError):
        layer.backend = "composed"  # read-only
    kbackend.set_backend(None)
    monkeypatch.setenv(kbackend.ENV_VAR, "fused")
    assert make(None, ms.float32).backend == "cpu"
    with pytest.raises(ValueError, match="backend"):
        make("gpu", ms.float32)


@pytest.fixture
def missing_library(monkeypatch, tmp_path):
    """Pretend the CPU kernel library was not built (fresh load state, warning not yet given)."""
    monkeypatch.setenv("MINDPET_CPU_KERNEL_LIBRARY", str(tmp_path / "absent.so"))
    monkeypatch.setattr(_library, "_state", {})
    monkeypatch.setattr(kbackend, "_warned", set())


def test_missing_library_fused_raises_auto_warns_once(missing_library, pynative):  # pylint: disable=unused-argument
    for name in NAMES:
        with pytest.raises(kbackend.FusedBackendUnavailable, match="not built"):
            MAKERS[name][0]("fused", ms.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = [MAKERS[name][0]("auto", ms.float32) for name in NAMES]
        layers += [MAKERS[name][0](None, ms.float32) for name in NAMES]
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "not built" in str(runtime[0].message)
    assert all(layer.backend == "composed" for layer in layers)
    for name, layer in zip(NAMES, layers):
        assert layer(Tensor(_x(name))).shape == (3, 5, D)


@requires_fused
def test_unsupported_arguments_compose_under_auto_and_raise_under_fused():
    # bfloat16 compute dtype (not in the kernel contract)
    assert LoRADense(8, 4, 2, 4, 0.0, compute_dtype=ms.bfloat16).backend == "composed"
    with pytest.raises(kbackend.FusedBackendUnavailable, match="bfloat16"):
        LoRADense(8, 4, 2, 4, 0.0, compute_dtype=ms.bfloat16, backend="fused")
    # a non-linearity without a fused kernel
    for name in ("adapter_layer", "adapter_dense", "low_rank_layer", "low_rank_dense"):
        make = MAKERS[name][0]
        assert make("auto", ms.float32, act="elu").backend == "composed"
        with pytest.raises(kbackend.FusedBackendUnavailable, match="no fused implementation"):
            make("fused", ms.float32, act="elu")
        assert make("fused", ms.float32, act="relu").backend == "cpu"
    # an input dtype outside the kernel contract: cast to compute_dtype, so the fused op still runs (residual
    # in the input's dtype) and agrees with composed
    x64 = Tensor(_x("adapter_layer").astype(np.float64))
    for name in ("adapter_layer", "low_rank_layer"):
        fused, composed = _pair(name)
        out_f, out_c = fused(x64), composed(x64)
        assert out_f.dtype == out_c.dtype == ms.float64
        _close(out_f.asnumpy(), out_c.asnumpy(), 1e-5, f"{name} float64 input")


@requires_fused
def test_adapters_honour_compute_dtype_when_fused(pynative):  # pylint: disable=unused-argument
    """The fused adapters run in compute_dtype as the composed ones do (they used to run in the input's)."""
    for name in ("adapter_layer", "low_rank_layer"):
        make = MAKERS[name][0]
        f16, f32 = make("fused", ms.float32, cdt=ms.float16), make("fused", ms.float32, cdt=ms.float32)
        composed16 = make("composed", ms.float32, cdt=ms.float16)
        values = _values(f16)
        for layer in (f16, f32, composed16):
            _set(layer, values)
        x = Tensor(_x(name))
        out16, out32, ref16 = f16(x).asnumpy(), f32(x).asnumpy(), composed16(x).asnumpy()
        assert out16.dtype == np.float32
        assert not np.array_equal(out16, out32), name  # float16 arithmetic happened
        _close(out16, ref16, 2e-3, f"{name} fused vs composed in float16")


@requires_fused
def test_shard_switches_to_composed():
    lora = LoRADense(D_IN, D, 4, 8, 0.0, backend="fused")
    lora.shard()  # no strategy: stays fused
    assert lora.backend == "cpu"
    lora.shard(strategy_lora_a_matmul=((2, 1), (1, 1)))
    assert lora.backend == "composed"
    layer = AdapterLayer(D, 8, backend="fused").shard(strategy_residual_add=((2, 1), (2, 1)))
    assert layer.backend == "composed"
    dense = LowRankAdapterDense(D_IN, D, backend="fused").shard(strategy_matmul_org=((2, 1), (1, 1)))
    assert dense.backend == "composed" and dense.low_rank_adapter.backend == "composed"
    dense = AdapterDense(D_IN, D, backend="fused")
    assert dense.backend == "cpu"
    dense.shard(strategy_bias_up_sampler=((2, 1), (1,)))
    assert dense.backend == "composed"


@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
@pytest.mark.parametrize("name", NAMES)
def test_integer_or_bool_input_is_type_error(mode, name, backend):  # pylint: disable=unused-argument
    """Non-float inputs are refused (GRAPH: at compile time) on every backend, naming 'x' and the float dtypes."""
    layer = MAKERS[name][0](backend, ms.float32)
    for dtype in (ms.int32, ms.bool_):
        x = Tensor(_x(name)).astype(dtype)
        with pytest.raises(TypeError, match=r"the input 'x' must be a float Tensor \(mindspore.float16, "
                                            r"mindspore.float32, mindspore.float64 or mindspore.bfloat16\)"):
            layer(x)


@pytest.mark.parametrize("name", NAMES)
def test_float64_and_bfloat16_inputs_run_composed(mode, name):  # pylint: disable=unused-argument
    """The other float dtypes are accepted (composed; output in the input's dtype).

    bfloat16 with 2-D inputs only: in GRAPH mode MindSpore's CPU Reshape has no bfloat16 kernel, so
    inputs of higher rank fail there (in MindSpore, after the dtype check).
    """
    layer = MAKERS[name][0]("auto", ms.float32)
    x = _x(name)
    for x, dtype, tol in ((x, ms.float64, 1e-6), (x[0], ms.bfloat16, 5e-2)):
        expected = layer(Tensor(x)).asnumpy()
        out = layer(Tensor(x).astype(dtype))
        assert out.dtype == dtype and out.shape == expected.shape
        np.testing.assert_allclose(out.astype(ms.float32).asnumpy(), expected, rtol=tol, atol=tol)
