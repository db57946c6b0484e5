"""Registration logic of the Ascend backend, checked on CPU: package discovery, availability,
the op names shared with ascendc/op_host, and the contract's output shapes."""
from __future__ import annotations

import re
from pathlib import Path

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
