"""``tk``: the package's old name, kept as an alias of :mod:`mindpet`.

Every ``tk.<path>`` module *is* the ``mindpet.<path>`` module (the same object), so every documented
import such as ``from tk.delta.lora import LoRADense`` or ``from tk.graph.freeze_utils import
freeze_delta`` gives exactly the objects of the ``mindpet`` paths.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

_ALIAS = "tk"
_TARGET = "mindpet"


class _AliasLoader(importlib.abc.Loader):
    """Loads ``tk.x.y`` by importing ``mindpet.x.y`` and returning that very module."""

    def __init__(self, target: str):
        self._target = target

    def create_module(self, spec):
        return importlib.import_module(self._target)

    def exec_module(self, module):
        # The target module is already executed by import_module.
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Maps every sub-module import under ``tk.`` to the module of the same path under ``mindpet.``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_ALIAS + "."):
            return None
        target_name = _TARGET + fullname[len(_ALIAS):]
        if importlib.util.find_spec(target_name) is None:
            return None
        is_package = hasattr(importlib.import_module(target_name), "__path__")
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name), is_package=is_package)


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

from mindpet import *  # noqa: E402,F401,F403  (re-export the top level)
from mindpet import __version__  # noqa: E402,F401
