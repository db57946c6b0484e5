"""The tool registry (benchmarks.lib.entry_points): the README's table, ``python -m benchmarks`` and the files agree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.lib import entry_points

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "benchmarks"
MARKER = "<!-- tools: generated from benchmarks/lib/entry_points.py"


def readme_table() -> str:
    lines = (PACKAGE / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER)) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end]) + "\n"


def test_the_readme_opens_with_the_registry_table():
    assert readme_table() == entry_points.markdown_table()
    text = (PACKAGE / "README.md").read_text(encoding="utf-8")
    assert text.index(MARKER) < text.index("\n## ")  # before every section


def test_python_m_benchmarks_lists_every_tool():
    out = subprocess.run([sys.executable, "-m", "benchmarks"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.endswith(entry_points.listing())
    commands = [line for line in out.splitlines() if line.startswith("python -m benchmarks.")]
    assert commands == [tool.command for tool in entry_points.TOOLS] and len(commands) >= 8


def test_every_tool_is_registered_and_nothing_else_sits_among_the_tools():
    """A module directly in benchmarks/ is a tool (runs as ``__main__``); library code lives in sub-packages."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__main__.py")}
    registered = [tool.module for tool in entry_points.TOOLS]
    assert len(set(registered)) == len(registered)
    nested = {name for name in registered if "." in name}  # a tool inside a sub-package, e.g. peer.lm
    assert set(registered) - nested == modules | packages
    for name in nested:
        path = PACKAGE.joinpath(*name.split(".")).with_suffix(".py")
        assert 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"), name
    for name in modules:
        assert 'if __name__ == "__main__":' in (PACKAGE / f"{name}.py").read_text(encoding="utf-8"), name
    for tool in entry_points.TOOLS:
        assert tool.command.startswith(f"python -m benchmarks.{tool.module}") and tool.summary


def test_the_table_has_one_row_per_tool():
    rows = entry_points.markdown_table().splitlines()
    assert rows[:2] == ["| command | what it does |", "|---|---|"]
    assert rows[2] == r"| `python -m benchmarks.suite --quick \| --full` | " + entry_points.TOOLS[0].summary + " |"
    assert len(rows) == 2 + len(entry_points.TOOLS)
