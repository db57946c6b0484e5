"""The project-side entry to the Ascend C type check (ascendc/README.md, "Type check"): runs
../shared/tools/ascendc-typecheck/typecheck.sh on ascendc/op_kernel (half and float) and ascendc/op_host
against the public CANN API headers when the four source trees are given, and requires 0 errors in
every compile unit. Without them it skips, saying which variables are missing.

Environment: ASC_DEVKIT, ASC_TOOLS, METADEF, GE (extracted trees at the commits typecheck.sh names);
MINDPET_ASCENDC_TYPECHECK (optional) = path of typecheck.sh when the repository is not next to shared/.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ("ASC_DEVKIT", "ASC_TOOLS", "METADEF", "GE")
KERNELS = sorted((ROOT / "ascendc" / "op_kernel").glob("mindpet_*.cpp"))
HOST = sorted((ROOT / "ascendc" / "op_host").glob("mindpet_*.cpp"))


def typecheck_script() -> Path:
    override = os.environ.get("MINDPET_ASCENDC_TYPECHECK")
    if override:
        return Path(override)
    return ROOT.parent / "shared" / "tools" / "ascendc-typecheck" / "typecheck.sh"


def test_sources_type_check_against_the_public_cann_headers():
    missing = [name for name in TREES if not os.environ.get(name)]
    if missing:
        pytest.skip(f"Ascend C type check not run: set {', '.join(missing)} to the extracted asc-devkit, "
                    "asc-tools, metadef and ge trees (commits in typecheck.sh; ascendc/README.md, Type check)")
    script = typecheck_script()
    if not script.is_file():
        pytest.skip(f"Ascend C type check not run: {script} does not exist "
                    "(set MINDPET_ASCENDC_TYPECHECK to the path of typecheck.sh)")
    for name in TREES:
        assert Path(os.environ[name]).is_dir(), f"{name}={os.environ[name]} is not a directory"
    run = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "VERBOSE": "1"})
    units = re.findall(r"^(kernel|op_host) (\S+)(?: \((half|float)\))?: (\d+) errors$", run.stdout, re.M)
    # every kernel in half and float, every op_host file: nothing skipped
    assert len(units) == 2 * len(KERNELS) + len(HOST), run.stdout + run.stderr
    failed = [f"{kind} {name} {dtype}: {count}" for kind, name, dtype, count in units if count != "0"]
    assert not failed, "\n".join(failed) + "\n" + run.stdout[-4000:]
    assert run.returncode == 0, run.stdout + run.stderr
