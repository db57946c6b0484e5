"""inject on Linear-like Cells: nn.Dense and mindformers' Linear (both weight layouts), registered user classes.

Each model is ``down(up(x))`` with ``up``: bias and ReLU, ``down``: no bias, no activation, built as
``nn.Dense``, as mindformers' ``Linear`` with ``transpose_b=True`` (weight [out, in]) or with
``transpose_b=False`` (weight [in, out]). The mindformers class is the stand-in of
``mindformers_standin.py`` under mindformers' own module and class name, so the built-in registration
(by full name) is what covers it. Values are checked against float64 numpy.
"""
import copy
import json

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

import mindpet
from mindpet.delta import AdapterDense, LoRADense, LowRankAdapterDense
from mindpet.graph import freeze_delta
from mindpet.inject import replaced_cell
from mindpet.kernels import FusedBackendUnavailable
from mindpet.linear_adapters import LinearAdapter, linear_adapter, unregister_linear

from integration_models import f64
from mindformers_standin import StandInLinear, replace_with_lora

# mindformers' Linear as the built-in registration sees it (module and class name), the stand-in's behaviour
MindformersLinear = type("Linear", (StandInLinear,), {"__module__": "mindformers.modules.layers"})

KINDS = ["dense", "linear-transpose_b", "linear-in_out"]
CIN, HID, COUT, RANK, ALPHA = 6, 8, 5, 2, 3.0
S = ALPHA / RANK


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"up.weight": rng.standard_normal((HID, CIN)).astype(np.float32) * 0.5,  # [out, in]
            "up.bias": rng.standard_normal(HID).astype(np.float32) * 0.5,
            "down.weight": rng.standard_normal((COUT, HID)).astype(np.float32) * 0.5}


def _linear(kind, w_out_in, bias, activation, compute_dtype=ms.float32):
    cout, cin = w_out_in.shape
    has_bias = bias is not None
    bias_init = Tensor(bias) if has_bias else "zeros"
    if kind == "dense":
        return nn.Dense(cin, cout, weight_init=Tensor(w_out_in), bias_init=bias_init, has_bias=has_bias,
                        activation=activation)
    transpose_b = kind == "linear-transpose_b"
    weight = w_out_in if transpose_b else np.ascontiguousarray(w_out_in.T)
    return MindformersLinear(cin, cout, weight_init=Tensor(weight), bias_init=bias_init, has_bias=has_bias,
                             activation=activation, transpose_b=transpose_b, param_init_type=ms.float32,
                             compute_dtype=compute_dtype)


class Net(nn.Cell):
    def __init__(self, kind, seed=0, compute_dtype=ms.float32):
        super().__init__()
        a = _arrays(seed)
        self.up = _linear(kind, a["up.weight"], a["up.bias"], nn.ReLU(), compute_dtype)
        self.down = _linear(kind, a["down.weight"], None, None, compute_dtype)

    def construct(self, x):
        return self.down(self.up(x))


def _reference(x, arrays, lora=None):
    """The model in float64; ``lora`` maps 'up'/'down' to (A, B)."""
    lora = lora or {}

    def weight(name):
        w = arrays[f"{name}.weight"].astype(np.float64)
        if name in lora:
            a, b = lora[name]
            w = w + S * b.astype(np.float64) @ a.astype(np.float64)
        return w

    h = np.maximum(x.astype(np.float64) @ weight("up").T + arrays["up.bias"], 0.0)
    return h @ weight("down").T


def _x(seed=1, rows=4):
    return np.random.default_rng(seed).standard_normal((rows, CIN)).astype(np.float32)


def _randomize_lora(net, seed=3):
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("up", "down"):
        layer = getattr(net, name)
        a = (rng.standard_normal(layer.mindpet_delta_lora_a.shape) * 0.5).astype(np.float32)
        b = (rng.standard_normal(layer.mindpet_delta_lora_b.shape) * 0.5).astype(np.float32)
        layer.mindpet_delta_lora_a.set_data(Tensor(a))
        layer.mindpet_delta_lora_b.set_data(Tensor(b))
        out[name] = (a, b)
    return out


def _params(net):
    return dict(net.parameters_and_names())


# ----------------------------------------------------------------------------- injection
@pytest.mark.parametrize("kind", KINDS)
def test_lora_keeps_outputs_parameter_objects_names_and_layout(mode, kind):  # pylint: disable=unused-argument
    net = Net(kind)
    x = Tensor(_x())
    before = net(x).asnumpy()
    np.testing.assert_allclose(before, _reference(_x(), _arrays()), rtol=1e-5, atol=1e-5)
    base = _params(net)
    assert mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA) == ["down", "up"]
    after_params = _params(net)
    for name, param in base.items():  # the same objects, names, shapes (the layout is kept)
        assert after_params[name] is param, name
    assert sorted(set(after_params) - set(base)) == sorted(f"{p}.mindpet_delta_lora_{ab}" for p in ("up", "down")
                                                           for ab in "ab")
    transpose_b = kind != "linear-in_out"
    for name, cout, cin in (("up", HID, CIN), ("down", COUT, HID)):
        layer = getattr(net, name)
        assert isinstance(layer, LoRADense) and layer.transpose_b is transpose_b
        assert tuple(layer.weight.shape) == ((cout, cin) if transpose_b else (cin, cout))
        assert tuple(layer.mindpet_delta_lora_a.shape) == (RANK, cin)
        assert tuple(layer.mindpet_delta_lora_b.shape) == (cout, RANK)
    assert net.up.has_bias and not net.down.has_bias
    assert isinstance(net.up.activation, nn.ReLU) and net.down.activation is None
    if not transpose_b:
        assert net.up.backend == "composed"  # the fused kernels take [out, in] only: selected, not transposed
    after = net(x).asnumpy()
    if net.up.backend == "composed":
        np.testing.assert_array_equal(after, before)
    else:  # the fused op rounds x W^T + b once
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method, kwargs, layer_cls", [
    ("adapter", {"bottleneck_size": 3}, AdapterDense),
    ("low_rank_adapter", {"reduction_factor": 2, "low_rank_size": 1}, LowRankAdapterDense),
])
def test_adapters_keep_outputs_and_parameter_objects(pynative, kind, method, kwargs, layer_cls):
    net = Net(kind)
    x = Tensor(_x())
    before, base = net(x).asnumpy(), _params(net)
    mindpet.inject(net, method, ["up", "down"], **kwargs)
    assert isinstance(net.up, layer_cls) and net.up.transpose_b is (kind != "linear-in_out")
    after_params = _params(net)
    assert all(after_params[n] is p for n, p in base.items())
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-6, atol=1e-6)


def test_compute_dtype_of_mindformers_linear_is_kept(pynative):
    """mindformers' Linear computes in its 'dtype' (float16 here) with float32 parameters: so does the LoRA layer."""
    net = Net("linear-transpose_b", compute_dtype=ms.float16)
    x = Tensor(_x())
    before = net(x).asnumpy()
    mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA, backend="composed")
    assert net.up.compute_dtype == ms.float16 and net.up.weight.dtype == ms.float32
    np.testing.assert_array_equal(net(x).asnumpy(), before)


# ----------------------------------------------------------------------------- training, merge
@pytest.mark.parametrize("kind", KINDS)
def test_a_training_step_reduces_the_loss_and_leaves_the_base_frozen(pynative, kind):
    net = Net(kind)
    mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA)
    freeze_delta(net, "lora")
    frozen = {n: p.asnumpy().copy() for n, p in _params(net).items() if "mindpet_delta" not in n}
    x, target = Tensor(_x(rows=16)), Tensor(np.random.default_rng(7).standard_normal((16, COUT)).astype(np.float32))
    loss_net = nn.WithLossCell(net, nn.MSELoss())
    step = nn.TrainOneStepCell(loss_net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    step.set_train(True)
    losses = [float(step(x, target).asnumpy()) for _ in range(4)]
    assert losses[-1] < losses[0]
    for name, value in frozen.items():
        np.testing.assert_array_equal(_params(net)[name].asnumpy(), value, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_unmerge_and_unload_against_float64(pynative, kind):
    net = Net(kind)
    mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA)
    lora = _randomize_lora(net)
    x, arrays = _x(), _arrays()
    expected = _reference(x, arrays, lora)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    weights = {n: getattr(net, n).weight for n in ("up", "down")}

    assert mindpet.merge_lora(net) == ["down", "up"]
    for name, (a, b) in lora.items():
        merged = arrays[f"{name}.weight"].astype(np.float64) + S * b.astype(np.float64) @ a.astype(np.float64)
        laid_out = merged if kind != "linear-in_out" else merged.T  # the weight stays in its layout
        np.testing.assert_allclose(f64(getattr(net, name).weight), laid_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert mindpet.unmerge_lora(net) == ["down", "up"]
    for name in ("up", "down"):
        original = arrays[f"{name}.weight"] if kind != "linear-in_out" else arrays[f"{name}.weight"].T
        np.testing.assert_allclose(getattr(net, name).weight.asnumpy(), original, rtol=0, atol=1e-6)

    cells = {n: getattr(net, n) for n in ("up", "down")}
    originals = {n: replaced_cell(c) for n, c in cells.items()}
    assert all(isinstance(c, (nn.Dense, MindformersLinear)) for c in originals.values())
    mindpet.merge_and_unload(net)
    for name in ("up", "down"):  # the very cell inject replaced, holding the merged Parameter
        assert getattr(net, name) is originals[name]
        assert getattr(net, name).weight is weights[name] and weights[name].name == f"{name}.weight"
    assert not any("mindpet_delta" in n for n in _params(net))
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_merge_and_unload_refuses_an_in_out_layer_without_its_own_cell(pynative):
    class Holder(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = LoRADense(CIN, COUT, RANK, ALPHA, 0.0, transpose_b=False, compute_dtype=ms.float32)
            self.head = LoRADense(COUT, 2, RANK, ALPHA, 0.0, compute_dtype=ms.float32)

        def construct(self, x):
            return self.head(self.fc(x))

    net = Holder()
    with pytest.raises(ValueError, match="'fc'.*transpose_b=False.*merge_lora"):
        mindpet.merge_and_unload(net)
    assert isinstance(net.head, LoRADense) and not net.head.merged  # checked before any change


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", KINDS)
def test_save_delta_and_load_delta_round_trip(pynative, kind, tmp_path):
    net = Net(kind)
    mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA)
    lora = _randomize_lora(net)
    x = Tensor(_x())
    expected = net(x).asnumpy()
    mindpet.save_delta(net, str(tmp_path / "delta"))

    fresh = Net(kind)
    mindpet.inject(fresh, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA)
    report = mindpet.load_delta(fresh, str(tmp_path / "delta"))
    assert report.ok
    for name, (a, b) in lora.items():
        np.testing.assert_array_equal(getattr(fresh, name).mindpet_delta_lora_a.asnumpy(), a)
        np.testing.assert_array_equal(getattr(fresh, name).mindpet_delta_lora_b.asnumpy(), b)
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_export_peft_writes_a_r_in_and_b_out_r_and_imports_back(pynative, kind, tmp_path):
    from mindpet._safetensors import read_safetensors  # pylint: disable=import-outside-toplevel
    net = Net(kind)
    mindpet.inject(net, "lora", ["up", "down"], lora_rank=RANK, lora_alpha=ALPHA)
    lora = _randomize_lora(net)
    x = Tensor(_x())
    expected = net(x).asnumpy()
    directory = tmp_path / "peft"
    mindpet.export_peft(net, str(directory))
    tensors = read_safetensors(str(directory / "adapter_model.safetensors"), "test")
    for name, (a, b) in lora.items():  # PEFT's layout whatever the base weight's
        np.testing.assert_array_equal(tensors[f"base_model.model.{name}.lora_A.weight"], a)
        np.testing.assert_array_equal(tensors[f"base_model.model.{name}.lora_B.weight"], b)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["r"] == RANK and config["lora_alpha"] == ALPHA

    fresh = Net(kind)  # no LoRA yet: import_peft injects into the Linear-like cells
    base = _params(fresh)
    report = mindpet.import_peft(fresh, str(directory))
    assert report.ok and report.injected_modules == ["down", "up"]
    assert all(_params(fresh)[n] is p for n, p in base.items())
    assert fresh.up.transpose_b is (kind != "linear-in_out")
    np.testing.assert_allclose(fresh(x).asnumpy(), expected, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- registration, errors, dry run
class Projection(nn.Cell):
    """A user's Linear-like Cell: weight 'kernel' [in, out] unless 'transposed', bias 'offset', activation 'act'."""

    def __init__(self, cin, cout, transposed=False, use_bias=True, act=None, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        shape = (cout, cin) if transposed else (cin, cout)
        self.kernel = Parameter(Tensor(rng.standard_normal(shape).astype(np.float32)), name="kernel")
        self.offset = Parameter(Tensor(rng.standard_normal(cout).astype(np.float32)), name="offset")
        self.transposed, self.use_bias, self.act = transposed, use_bias, act
        self.matmul = ops.MatMul(transpose_b=transposed)

    def construct(self, x):
        y = self.matmul(x, self.kernel)
        if self.use_bias:
            y = y + self.offset
        if self.act is not None:
            y = self.act(y)
        return y


class Wrapper(nn.Cell):
    def __init__(self, **kw):
        super().__init__()
        self.proj = Projection(CIN, COUT, **kw)

    def construct(self, x):
        return self.proj(x)


@pytest.fixture
def registered_projection():
    adapter = mindpet.register_linear(Projection, weight="kernel", bias="offset",
                                      transpose_b=lambda cell: cell.transposed, has_bias="use_bias", activation="act")
    yield adapter
    assert unregister_linear(Projection) is adapter


def test_unknown_class_is_a_value_error_naming_the_class_and_the_registration_call(pynative):
    net = Wrapper()
    names = sorted(_params(net))
    with pytest.raises(ValueError) as info:
        mindpet.inject(net, "lora", ["proj"], lora_rank=RANK, lora_alpha=ALPHA)
    message = str(info.value)
    for words in ("'proj' (Projection)", "Projection", "mindpet.register_linear(Projection",
                  "not registered", "exclude_modules"):
        assert words in message, (words, message)
    with pytest.raises(ValueError, match="mindpet.register_linear"):  # a dry run checks it too
        mindpet.inject(net, "lora", ["proj"], dry_run=True)
    assert isinstance(net.proj, Projection) and sorted(_params(net)) == names


def test_dense_subclass_with_its_own_construct_is_not_covered(pynative):
    class Scaled(nn.Dense):
        def construct(self, x):
            return super().construct(x) * 2

    class Holder(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = Scaled(CIN, COUT)

        def construct(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="subclasses Dense with its own construct.*register_linear\\(Scaled"):
        mindpet.inject(Holder(), "lora", "fc", lora_rank=RANK, lora_alpha=ALPHA)


@pytest.mark.parametrize("transposed, use_bias, act", [(False, True, nn.GELU()), (True, False, None)])
def test_a_registered_user_class_is_injected_merged_and_unloaded(pynative, registered_projection, transposed,
                                                                 use_bias, act):
    assert isinstance(registered_projection, LinearAdapter)
    net = Wrapper(transposed=transposed, use_bias=use_bias, act=act)
    x = Tensor(_x())
    before = net(x).asnumpy()
    kernel, offset = net.proj.kernel, net.proj.offset
    assert mindpet.inject(net, "lora", ["proj"], lora_rank=RANK, lora_alpha=ALPHA) == ["proj"]
    layer = net.proj
    assert isinstance(layer, LoRADense) and layer.transpose_b is transposed and layer.has_bias is use_bias
    assert layer.weight is kernel and kernel.name == "proj.kernel"  # the checkpoint key is kept
    assert (layer.bias is offset) if use_bias else layer.bias is None
    assert offset.name == "proj.offset"
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-6, atol=1e-6)

    rng = np.random.default_rng(4)
    a = rng.standard_normal((RANK, CIN)).astype(np.float32)
    b = rng.standard_normal((COUT, RANK)).astype(np.float32)
    layer.mindpet_delta_lora_a.set_data(Tensor(a))
    layer.mindpet_delta_lora_b.set_data(Tensor(b))
    expected = net(x).asnumpy()
    w = kernel.asnumpy().astype(np.float64)
    update = S * b.astype(np.float64) @ a.astype(np.float64)
    mindpet.merge_and_unload(net)
    assert net.proj.__class__ is Projection and net.proj.kernel is kernel
    np.testing.assert_allclose(f64(kernel), w + (update if transposed else update.T), rtol=0, atol=1e-6)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert sorted(_params(net)) == ["proj.kernel", "proj.offset"]


def test_registration_arguments_and_unreadable_cells_are_checked(pynative, registered_projection):
    # pylint: disable=unused-argument
    with pytest.raises(TypeError, match="'cls'"):
        mindpet.register_linear(object)
    with pytest.raises(TypeError, match="'weight'"):
        mindpet.register_linear(Projection, weight=None)
    with pytest.raises(TypeError, match="fields"):
        mindpet.register_linear(Projection, transposed=True)
    with pytest.raises(TypeError, match="not both"):
        mindpet.register_linear(Projection, LinearAdapter(), weight="kernel")
    net = Wrapper()
    net.proj.transposed = "yes"
    with pytest.raises(ValueError, match="Projection.*'transpose_b' must give a bool"):
        mindpet.inject(net, "lora", ["proj"], lora_rank=RANK, lora_alpha=ALPHA)
    net.proj.transposed = False
    net.proj.offset = Parameter(Tensor(np.zeros(COUT + 1, np.float32)), name="offset")
    with pytest.raises(ValueError, match="'offset'.*shape \\(5,\\)"):
        mindpet.inject(net, "lora", ["proj"], lora_rank=RANK, lora_alpha=ALPHA)
    assert isinstance(net.proj, Projection)


def test_builtin_registrations():
    assert linear_adapter(nn.Dense(2, 3)) is not None
    assert linear_adapter(MindformersLinear(2, 3)) is not None
    assert linear_adapter(StandInLinear(2, 3)) is None  # another class name: not mindformers' Linear
    assert linear_adapter(nn.LayerNorm((3,))) is None


@pytest.mark.parametrize("method", ["lora", "adapter", "low_rank_adapter"])
def test_dry_run_needs_no_hyper_parameters(pynative, method):
    net = Net("linear-in_out")
    assert mindpet.inject(net, method, ["up", "down"], dry_run=True) == ["down", "up"]
    assert isinstance(net.up, MindformersLinear)
    with pytest.raises(TypeError, match="'r'"):  # names are still checked
        mindpet.inject(net, method, ["up"], dry_run=True, r=8)
    if method == "lora":
        with pytest.raises(TypeError, match="lora_alpha"):  # a real run needs them
            mindpet.inject(net, "lora", ["up"], lora_rank=RANK)


def test_fused_backend_on_an_in_out_weight_is_a_clear_error(pynative):
    net = Net("linear-in_out")
    with pytest.raises(FusedBackendUnavailable, match=r"\[in, out\] \(transpose_b=False\)"):
        mindpet.inject(net, "lora", ["up"], lora_rank=RANK, lora_alpha=ALPHA, backend="fused")
    assert isinstance(net.up, MindformersLinear)


# ----------------------------------------------------------------------------- mindformers' own replacement walk
def test_mindformers_get_pet_model_pattern_on_an_in_out_linear(pynative):
    """get_pet_model builds LoRADense, then hands over the Linear's matmul (transpose_b=False) and weight."""

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            a = _arrays()
            self.wq = StandInLinear(CIN, HID, weight_init=Tensor(np.ascontiguousarray(a["up.weight"].T)),
                                    bias_init=Tensor(a["up.bias"]), transpose_b=False, compute_dtype=ms.float32)

        def construct(self, x):
            return self.wq(x)

    net = Block()
    x = _x()
    before = net(Tensor(x)).asnumpy()
    replace_with_lora(net, ".*wq", lora_rank=RANK, lora_alpha=ALPHA, lora_dropout=0.0)
    layer = net.wq
    assert isinstance(layer, LoRADense) and layer.transpose_b is False and layer.backend == "composed"
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), before, rtol=1e-6, atol=1e-6)
    layer.lora_dropout.dropout.shard(((2, 1),))  # mindformers' parallel code reaches the primitive so
    assert layer.lora_dropout.dropout is layer.lora_dropout
    assert copy.deepcopy(layer).lora_dropout.dropout is not None  # the alias survives a deep copy
    rng = np.random.default_rng(5)
    a = rng.standard_normal((RANK, CIN)).astype(np.float32)
    b = rng.standard_normal((HID, RANK)).astype(np.float32)
    layer.mindpet_delta_lora_a.set_data(Tensor(a))
    layer.mindpet_delta_lora_b.set_data(Tensor(b))
    w = _arrays()["up.weight"].astype(np.float64) + S * b.astype(np.float64) @ a.astype(np.float64)
    expected = x.astype(np.float64) @ w.T + _arrays()["up.bias"]
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert mindpet.merge_lora(net) == ["wq"]  # was a numpy broadcasting ValueError
    np.testing.assert_allclose(f64(layer.weight), w.T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_mindspore_cells_and_delta_layer_parts_are_not_taken_for_unknown_linear_classes(pynative):
    """'*' selects the Linear-like cells only: an nn.Embedding (2-D table) and an injected adapter's own parts
    (2-D Parameters) are neither replaced nor reported as unregistered classes."""

    class Model(nn.Cell):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, CIN)
            self.net = Net("dense")

        def construct(self, ids):
            return self.net(self.embed(ids))

    model = Model()
    mindpet.inject(model, "adapter", "net.up", bottleneck_size=2)
    assert mindpet.inject(model, "lora", "*", exclude_modules="net.up", lora_rank=RANK, lora_alpha=ALPHA) == [
        "net.down"]
    assert isinstance(model.embed, nn.Embedding) and isinstance(model.net.up, AdapterDense)
