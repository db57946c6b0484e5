"""Backend selection: choice precedence, auto per device, fallback with one warning, clear errors."""
from __future__ import annotations

import warnings

import pytest

import mindpet.kernels as kernels
from mindpet.kernels import _library, backend as kbackend
from kernel_testing import requires_fused


@pytest.fixture(autouse=True)
def _clean_choice(monkeypatch):
    monkeypatch.delenv(kbackend.ENV_VAR, raising=False)
    kbackend.set_backend(None)
    yield
    kbackend.set_backend(None)


@pytest.fixture
def missing_library(monkeypatch, tmp_path):
    """Pretend the CPU kernel library was not built (fresh load state, warning not yet given)."""
    monkeypatch.setenv("MINDPET_CPU_KERNEL_LIBRARY", str(tmp_path / "absent.so"))
    monkeypatch.setattr(_library, "_state", {})
    monkeypatch.setattr(kbackend, "_warned", set())


def test_choice_precedence(monkeypatch):
    assert kbackend.get_backend() == "auto"
    monkeypatch.setenv(kbackend.ENV_VAR, "composed")
    assert kbackend.get_backend() == "composed"
    kbackend.set_backend("fused")  # global setting wins over the environment
    assert kbackend.get_backend() == "fused"
    assert kernels.LoraLinear(1.0, backend="composed").impl == "composed"  # per layer wins over global
    kbackend.set_backend(None)
    assert kbackend.get_backend() == "composed"
    assert kernels.LoraLinear(1.0).impl == "composed"


@pytest.mark.parametrize("bad", ["fast", "", 3])
def test_invalid_choices_raise(bad):
    with pytest.raises(ValueError, match="backend"):
        kbackend.set_backend(bad)
    with pytest.raises(ValueError):
        kernels.LoraLinear(1.0, backend=bad)


def test_invalid_environment_value_raises(monkeypatch):
    monkeypatch.setenv(kbackend.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=kbackend.ENV_VAR):
        kbackend.get_backend()


@requires_fused
def test_auto_uses_cpu_kernels_on_cpu():
    assert kbackend.resolve("auto") == "cpu"
    assert kernels.LoraLinear(1.0).impl == "cpu"
    assert "sgemm" in _library.blas_description()


def test_missing_library_auto_warns_once_and_fused_raises(missing_library):  # pylint: disable=unused-argument
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kbackend.resolve("auto") == "composed"
        assert kernels.LoraLinear(1.0).impl == "composed"
        assert kernels.Adapter("relu").impl == "composed"
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "not built" in str(runtime[0].message)
    with pytest.raises(kbackend.FusedBackendUnavailable, match="not built"):
        kbackend.resolve("fused", "lora_linear")
    with pytest.raises(kbackend.FusedBackendUnavailable, match="backend='composed'"):
        kernels.LoraLinear(1.0, backend="fused")


def test_gpu_runs_composed_silently(monkeypatch):
    monkeypatch.setattr(kbackend, "device_target", lambda: "GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kbackend.resolve("auto") == "composed"
    with pytest.raises(kbackend.FusedBackendUnavailable, match="GPU"):
        kbackend.resolve("fused")


def test_ascend_uses_the_custom_op_package_when_installed(monkeypatch):
    from mindpet.kernels import ascend  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(kbackend, "device_target", lambda: "Ascend")
    monkeypatch.setattr(ascend, "available", lambda: True)
    assert kbackend.resolve("auto") == "ascend"
    monkeypatch.setattr(ascend, "available", lambda: False)
    assert kbackend.resolve("auto") == "composed"
    with pytest.raises(kbackend.FusedBackendUnavailable, match="Ascend custom-op package"):
        kbackend.resolve("fused")


@pytest.mark.parametrize("backend", ["fused", "composed"])
def test_op_cells_hold_no_parameters(backend):
    """The layers own every parameter: names and checkpoints cannot depend on the backend."""
    if backend == "fused" and not _library.available():
        pytest.skip("mindpet CPU kernel library not built")
    for cell in (kernels.LoraLinear(2.0, backend=backend), kernels.Adapter("gelu", backend=backend),
                 kernels.LowRankAdapter("relu", backend=backend)):
        assert not list(cell.get_parameters())


@requires_fused
def test_select_is_the_one_decider_and_its_selection_is_frozen():
    sel = kbackend.select("auto", "lora_linear")
    assert (sel.choice, sel.impl, sel.fused) == ("auto", "cpu", True)
    assert kbackend.resolve("auto", "lora_linear") == sel.impl
    with pytest.raises(AttributeError):
        sel.impl = "composed"  # frozen
    composed = sel.as_composed("sharded")
    assert (composed.choice, composed.impl, composed.fused, composed.reason) == ("auto", "composed", False, "sharded")
    assert kbackend.select("composed").impl == "composed"


@requires_fused
def test_a_dtype_without_fused_kernels_composes_under_auto_and_raises_under_fused():
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    sel = kbackend.select("auto", "lora_linear", dtype=ms.bfloat16)
    assert sel.impl == "composed" and "not bfloat16" in sel.reason
    assert kbackend.select("auto", "lora_linear", dtype=ms.float16).impl == "cpu"
    with pytest.raises(kbackend.FusedBackendUnavailable, match="lora_linear.*not bfloat16"):
        kbackend.select("fused", "lora_linear", dtype=ms.bfloat16)
    assert kernels.LoraLinear(1.0, dtype=ms.bfloat16).impl == "composed"


@requires_fused
def test_every_fused_op_cell_holds_its_selection_and_one_dtype_rule():
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        cells = [kernels.LoraLinear(1.0, backend="fused"), kernels.Adapter("relu", backend="fused"),
                 kernels.LowRankAdapter("relu", backend="fused"), kernels.Activation("relu", backend="fused"),
                 kernels.LayerNorm(4, backend="fused")]
        for cell in cells:
            assert isinstance(cell, kernels.FusedOp)
            assert cell.selection == kbackend.Selection("fused", "cpu") and cell.fused and cell.impl == "cpu"
        act = kernels.Activation("relu", backend="fused")
        with pytest.raises(TypeError, match="For 'activation', the fused backend supports float32 and float16"):
            act(ms.Tensor(np.ones((2, 2)), ms.float64))
        auto = kernels.Activation("relu", backend="auto")  # float64 runs composed under auto
        assert auto(ms.Tensor(-np.ones((2, 2)), ms.float64)).asnumpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
