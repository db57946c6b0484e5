"""Every ```python block of README.md runs as written, in order, in one process (the README's code is the
first thing users paste). Blocks not meant to run are ```text. Runs in a fresh process in a temporary
directory (the blocks write checkpoints and runs/), with tiny models."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)

RUNNER = '''
import json, sys, traceback
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- README.md block at line {line}", flush=True)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"README.md block at line {line} failed", file=sys.stderr)
        sys.exit(1)
print("--- all blocks ran", flush=True)
'''


def python_blocks(text: str) -> List[Tuple[int, str]]:
    """``(first line of the code, code)`` of every fenced ``python`` block, in order."""
    return [(text.count("\n", 0, m.start("body")) + 1, m.group("body"))
            for m in FENCE.finditer(text) if m.group("lang") == "python"]


def test_python_blocks_are_not_indented():
    """An indented block (in a list item) cannot run as written: such snippets are ```text."""
    for match in FENCE.finditer(README.read_text(encoding="utf-8")):
        if match.group("lang") == "python":
            assert not match.group("indent"), f"indented python block: {match.group('body')[:60]!r}"


def test_extraction_finds_the_usage_blocks():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 9
    assert python_blocks("a\n```python\nx = 1\n```\n```text\nnot run\n```\n") == [(3, "x = 1\n")]


def test_readme_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "runner.py", "blocks.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:])
    assert "--- all blocks ran" in proc.stdout
