"""What a first-time user tripped on (issue 19, part 4), beside the README blocks (tests/test_readme.py).

- ``freeze_delta(...).unfrozen`` printed ``[]`` in the README's own example: the result also lists what is
  trainable and frozen after the call.
- ``make test`` reinstalled the package (minutes, silently) on every run: the install is stamped and
  repeated only when a build input changes.
- The tests left MindSpore's ``rank_0/om/analyze_fail.ir`` in the working directory.
- The quick benchmark profile printed "missed" for most targets without saying why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from mindpet.delta import LoRADense
from mindpet.graph import freeze_delta, freeze_modules

REPO = Path(__file__).resolve().parents[2]


class _Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.query = LoRADense(4, 4, 2, 4, 0.0)
        self.head = nn.Dense(4, 2)


def test_freeze_result_lists_what_is_trainable_after_the_call():
    net = _Net()
    result = freeze_delta(net, "lora", exclude=["head.*"])
    trainable = ["query.mindpet_delta_lora_a", "query.mindpet_delta_lora_b", "head.weight", "head.bias"]
    assert result.trainable == trainable
    assert result.trainable == [p.name for p in net.trainable_params()]
    assert result.untrainable == ["query.weight", "query.bias"]
    assert result.frozen == ["query.weight", "query.bias"] and result.unfrozen == []
    again = freeze_delta(net, "lora")  # the head is frozen now; nothing made trainable
    assert again.trainable == trainable[:2] and again.frozen == ["head.weight", "head.bias"]
    back = freeze_modules(net, exclude=["head.*"])
    assert back.unfrozen == ["head.weight", "head.bias"] and back.trainable == trainable


# ---------------------------------------------------------------- make: the install runs only when needed
def _make_dry_run(tree: Path, target: str = "test") -> str:
    return subprocess.run(["make", "-n", target], cwd=tree, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_once_and_again_only_after_a_build_input_changes(tmp_path):
    """Dry runs (``make -n``) in a copy of the build files: nothing is installed."""
    tree = tmp_path / "clone"
    tree.mkdir()
    for name in ("Makefile", "setup.py", "pyproject.toml", "CMakeLists.txt"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("cmake", "ops", "ascendc"):
        shutil.copytree(REPO / name, tree / name)
    fresh = _make_dry_run(tree)
    assert "pip install" in fresh and "--quiet" not in fresh, "a fresh clone installs, showing progress"
    assert "pytest" in fresh
    (tree / ".make").mkdir()
    subprocess.run(["make", "-t", "setup", "setup-assets"], cwd=tree, capture_output=True, check=True)  # as installed
    assert list((tree / ".make").iterdir()), "stamps live in .make/"
    again = _make_dry_run(tree)
    assert "pip install" not in again and "pytest" in again, "nothing changed: no install"
    source = next((tree / "ops").rglob("*.cc"))
    later = (tree / ".make" / "setup").stat().st_mtime + 10  # edited after the install
    os.utime(source, (later, later))
    changed = _make_dry_run(tree)
    assert "pip install --progress-bar on -e" in changed and "--no-deps" not in changed, "a native source changed"


def test_stamps_are_kept_out_of_git():
    assert ".make/" in (REPO / ".gitignore").read_text(encoding="utf-8").split()


# ---------------------------------------------------------------- MindSpore's dumps stay out of the tree
class _Failing(nn.Cell):
    def construct(self, x):
        raise ValueError("compile-time failure")


def test_a_failed_graph_compilation_writes_nothing_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ms.set_context(mode=ms.GRAPH_MODE)
    with pytest.raises(ValueError):
        _Failing()(Tensor(np.ones(2, np.float32)))
    assert not list(tmp_path.iterdir()), f"left in the working directory: {list(tmp_path.iterdir())}"
    om = Path(os.environ["MS_OM_PATH"])
    assert om.resolve() != REPO.resolve() and REPO.resolve() not in om.resolve().parents
    assert list(om.rglob("analyze_fail.ir")), "the dump went to MS_OM_PATH"


# ---------------------------------------------------------------- the benchmark's target note
def _entry(label: str, epochs: float, met: list) -> dict:
    return {"label": label, "epochs": epochs,
            "targets": [{"target": f"t{i}", "value": 1.0, "bound": 1.0, "met": m, "note": ""}
                        for i, m in enumerate(met)]}


def test_suite_target_note_explains_misses_of_the_quick_profile():
    from benchmarks.suite import targets_note
    table = [_entry("LoRA", 2.3, [False, False, False, False, False]), _entry("BitFit", 2.3, [True, False])]
    quick = targets_note(table, {"seeds": [0], "steps": 120})
    assert quick.startswith("1 of 7 targets met.")
    assert "exit status is 0" in quick and "smoke run" in quick and "2.3 epochs" in quick
    full = targets_note([_entry("LoRA", 5.8, [True, False])], {"seeds": [0, 1, 2], "steps": 300})
    assert full.startswith("1 of 2 targets met.") and "smoke run" not in full
