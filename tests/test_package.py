"""The installed package: version, native module, and the ``tk`` alias of every documented path."""
import importlib

import pytest

import mindpet


def test_version_matches_native_build():
    from mindpet import _native

    info = _native.build_info()
    assert info["version"] == mindpet.__version__
    assert isinstance(info["openmp"], bool)
    assert info["compiler"]


@pytest.mark.parametrize("alias, target, names", [
    ("tk.delta", "mindpet.delta", ["LoRADense"]),
    ("tk.delta.lora", "mindpet.delta.lora", ["LoRADense"]),
    ("tk.graph", "mindpet.graph", ["freeze_delta", "freeze_modules", "freeze_from_config",
                                   "TrainableParamsCheckPoint"]),
    ("tk.graph.freeze_utils", "mindpet.graph.freeze_utils", ["freeze_delta", "freeze_modules"]),
    ("tk.graph.ckpt_util", "mindpet.graph.ckpt_util", ["TrainableParamsCheckPoint"]),
])
def test_tk_alias_gives_the_same_objects(alias, target, names):
    alias_mod = importlib.import_module(alias)
    target_mod = importlib.import_module(target)
    assert alias_mod is target_mod
    for name in names:
        assert getattr(alias_mod, name) is getattr(target_mod, name)


def test_tk_from_import_statements():
    from tk.delta import LoRADense as a
    from tk.delta.lora import LoRADense as b
    from tk.graph import freeze_delta as c, TrainableParamsCheckPoint as d
    from tk.graph.freeze_utils import freeze_delta as e
    from mindpet.delta import LoRADense
    from mindpet.graph import freeze_delta, TrainableParamsCheckPoint

    assert a is b is LoRADense
    assert c is e is freeze_delta
    assert d is TrainableParamsCheckPoint


def test_tk_unknown_module_raises_module_not_found():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tk.no_such_module")
