"""Registration logic of the Ascend backend, checked on CPU: package discovery, availability,
the op names shared with ascendc/op_host, and the contract's output shapes."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mindpet.kernels import ascend

ROOT = Path(__file__).resolve().parents[2]


def make_package(root: Path, missing: str | None = None) -> Path:
    """A fake installed custom-op package: op_api/include with the aclnn headers."""
    include = root / "op_api" / "include"
    include.mkdir(parents=True)
    for op_type in ascend.OP_TYPES.values():
        if op_type != missing:
            (include / ascend.aclnn_header(op_type)).write_text("// header\n")
    return root


def test_header_names_follow_mindspore_lookup():
    from mindspore.ops.operations._custom_ops_utils import CustomInfoGenerator
    for op_type in ascend.OP_TYPES.values():
        expected = CustomInfoGenerator(op_type).aclnn_api_file_name
        assert ascend.aclnn_header(op_type) == expected
    assert ascend.aclnn_header("MindpetLoraLinear") == "aclnn_mindpet_lora_linear.h"


def test_package_found_through_custom_opp_path(tmp_path):
    pkg = make_package(tmp_path / "pkg")
    env = {"ASCEND_CUSTOM_OPP_PATH": f"{tmp_path / 'other'}:{pkg}"}
    assert ascend.package_installed(env)
    assert ascend.op_api_dirs(env)[1] == pkg / "op_api" / "include"


def test_package_found_through_vendor_priority(tmp_path):
    opp = tmp_path / "opp"
    make_package(opp / "vendors" / "mindpet")
    (opp / "vendors" / "config.ini").write_text("load_priority=customize, mindpet\n")
    env = {"ASCEND_OPP_PATH": str(opp)}
    assert [d.parent.parent.name for d in ascend.op_api_dirs(env)] == ["customize", "mindpet"]
    assert ascend.package_installed(env)


def test_incomplete_or_absent_package_is_not_installed(tmp_path):
    pkg = make_package(tmp_path / "pkg", missing="MindpetAdapterGrad")
    assert not ascend.package_installed({"ASCEND_CUSTOM_OPP_PATH": str(pkg)})
    assert not ascend.package_installed({})
    assert not ascend.package_installed({"ASCEND_OPP_PATH": str(tmp_path / "nowhere")})


def test_not_available_on_cpu_even_with_a_package(tmp_path, monkeypatch):
    import mindspore as ms
    ms.set_context(device_target="CPU")
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(make_package(tmp_path / "pkg")))
    assert ascend.package_installed()
    assert not ascend.on_ascend() and not ascend.available()
    with pytest.raises(RuntimeError, match="Ascend"):
        ascend.primitive("lora_linear_fwd")
    with pytest.raises(KeyError):
        ascend.primitive("lora_linear")


def test_available_when_on_ascend_with_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(ascend, "on_ascend", lambda: True)
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(make_package(tmp_path / "pkg")))
    monkeypatch.delenv("ASCEND_OPP_PATH", raising=False)
    assert ascend.available()
    monkeypatch.setenv("ASCEND_CUSTOM_OPP_PATH", str(tmp_path / "empty"))
    assert not ascend.available()


def test_op_types_match_the_op_host_registrations():
    registered = set()
    for src in (ROOT / "ascendc" / "op_host").glob("*.cpp"):
        registered |= set(re.findall(r"OP_ADD\((\w+)\)", src.read_text(encoding="utf-8")))
    assert registered == set(ascend.OP_TYPES.values())


def test_contract_names_are_the_documented_ones():
    contracts = (ROOT / "ops" / "CONTRACTS.md").read_text(encoding="utf-8")
    for name in ascend.OP_TYPES:
        assert f"`{name}`" in contracts


M, K, N, R, D, B = 5, 7, 11, 3, 13, 4


@pytest.mark.parametrize("name,inputs,outputs", [
    ("lora_linear_fwd", [[M, K], [N, K], [N], [R, K], [N, R], [M, K], [], [], []],
     ([M, N], [M, R])),
    ("lora_linear_bwd", [[M, N], [M, K], [N, K], [R, K], [N, R], [M, R], [1], [], []],
     ([M, K], [R, K], [N, R])),
    ("adapter_fwd", [[M, D], [B, D], [B], [D, B], [D], []], ([M, D], [M, B])),
    ("adapter_bwd", [[M, D], [M, D], [B, D], [D, B], [M, B], []],
     ([M, D], [B, D], [B], [D, B], [D])),
    ("low_rank_adapter_fwd", [[M, D], [D, R], [R, B], [B], [B, R], [R, D], [D], []],
     ([M, D], [M, R], [M, B], [M, R])),
    ("low_rank_adapter_bwd", [[M, D], [M, D], [D, R], [R, B], [B, R], [R, D], [M, R], [M, B],
                              [M, R], []],
     ([M, D], [D, R], [R, B], [B], [B, R], [R, D], [D])),
])
def test_output_shapes_and_dtypes_follow_the_contract(name, inputs, outputs):
    assert ascend.out_shape(name, *inputs) == outputs
    assert ascend.out_dtype(name, "f16", *(["f16"] * (len(inputs) - 1))) == ("f16",) * len(outputs)


# ---- the empty batch (M = 0): answered by the primitive, never sent to the kernels ---------------

@pytest.fixture
def pynative():
    """PYNATIVE on CPU for the test (the short-circuit is a Python ``__call__``), then GRAPH again
    as tests/conftest.py leaves it."""
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def empty_batch_inputs(name: str, dtype):
    """MindSpore inputs of contract op `name` with M = 0 rows (weights random, attributes last)."""
    import mindspore as ms
    rng = np.random.default_rng(0)
    m, k, n, r, d, b = 0, K, N, R, D, B
    shapes = {
        "lora_linear_fwd": [[m, k], [n, k], [n], [r, k], [n, r], [m, k]],
        "lora_linear_bwd": [[m, n], [m, k], [n, k], [r, k], [n, r], [m, r], [1]],
        "adapter_fwd": [[m, d], [b, d], [b], [d, b], [d]],
        "adapter_bwd": [[m, d], [m, d], [b, d], [d, b], [m, b]],
        "low_rank_adapter_fwd": [[m, d], [d, r], [r, b], [b], [b, r], [r, d], [d]],
        "low_rank_adapter_bwd": [[m, d], [m, d], [d, r], [r, b], [b, r], [r, d], [m, r], [m, b], [m, r]],
    }[name]
    attrs = {"lora_linear_fwd": (0.5, 1, 1), "lora_linear_bwd": (0.5, 1)}.get(name, (2,))
    tensors = [ms.Tensor(rng.standard_normal(s).astype(np.float32), dtype) for s in shapes]
    return tensors + list(attrs)


EMPTY_OUTPUTS = {
    "lora_linear_fwd": ([0, N], [0, R]),
    "lora_linear_bwd": ([0, K], [R, K], [N, R]),
    "adapter_fwd": ([0, D], [0, B]),
    "adapter_bwd": ([0, D], [B, D], [B], [D, B], [D]),
    "low_rank_adapter_fwd": ([0, D], [0, R], [0, B], [0, R]),
    "low_rank_adapter_bwd": ([0, D], [D, R], [R, B], [B], [B, R], [R, D], [D]),
}


@pytest.mark.parametrize("name", sorted(EMPTY_OUTPUTS))
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
def test_empty_batch_outputs_follow_the_contract(name, dtype_name):
    import mindspore as ms
    dtype = getattr(ms, dtype_name)
    inputs = empty_batch_inputs(name, dtype)
    assert ascend.is_empty_batch(*inputs)
    outputs = ascend.empty_batch_outputs(name, *inputs)
    assert [list(o.shape) for o in outputs] == [list(s) for s in EMPTY_OUTPUTS[name]]
    for out in outputs:
        assert out.dtype == dtype
        assert not np.any(out.asnumpy())  # weight and bias gradients of no rows are zero


def test_non_empty_batches_are_not_short_circuited():
    import mindspore as ms
    assert not ascend.is_empty_batch(ms.Tensor(np.zeros((1, 4), np.float32)), 2)
    assert not ascend.is_empty_batch(ms.Tensor(np.float32(0)))  # 0-d: no row axis
    assert not ascend.is_empty_batch()


@pytest.mark.parametrize("name", sorted(EMPTY_OUTPUTS))
def test_primitive_answers_an_empty_batch_without_the_kernel(name, monkeypatch, pynative):
    # On CPU the aclnn op cannot run at all: an M = 0 call that reached it would fail.
    import mindspore as ms
    monkeypatch.setattr(ascend, "available", lambda: True)
    prim = ascend.primitive(name)
    assert isinstance(prim, ms.ops.Custom) and prim.func == "aclnn" + ascend.OP_TYPES[name]
    outputs = prim(*empty_batch_inputs(name, ms.float32))
    assert [list(o.shape) for o in outputs] == [list(s) for s in EMPTY_OUTPUTS[name]]


def test_empty_batch_gradients_through_the_forward_are_zero(monkeypatch, pynative):
    # A layer trained on an empty batch gets zero weight gradients and an empty input gradient.
    import mindspore as ms
    monkeypatch.setattr(ascend, "available", lambda: True)
    fwd = ascend.primitive("adapter_fwd")
    h, wd, bd, wu, bu, code = empty_batch_inputs("adapter_fwd", ms.float32)

    def loss(h, wd, bd, wu, bu):
        return fwd(h, wd, bd, wu, bu, code)[0].sum()

    grads = ms.grad(loss, grad_position=(0, 1, 2, 3, 4))(h, wd, bd, wu, bu)
    assert [list(g.shape) for g in grads] == [[0, D], [B, D], [B], [D, B], [D]]
    assert all(not np.any(g.asnumpy()) for g in grads)
