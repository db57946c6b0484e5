"""Static checks of the Ascend C sources (they cannot be compiled here): the API rules the kernels
were found to break (ascendc/README.md, "Design" facts 1-4) stay fixed in every kernel and op_host.
Text checks only: they catch a regression of a known rule, not a wrong API call."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = sorted((ROOT / "ascendc" / "op_kernel").glob("mindpet_*.cpp"))
HOST = sorted((ROOT / "ascendc" / "op_host").glob("mindpet_*.cpp"))
COMMON = ROOT / "ascendc" / "op_kernel" / "mindpet_kernel_common.h"


def code(path: Path) -> str:
    """The source without // comments."""
    return "\n".join(line.split("//", 1)[0] for line in path.read_text().splitlines())


def test_all_six_kernels_are_checked():
    assert len(KERNELS) == 6 and len(HOST) == 3


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.stem)
def test_kernel_follows_the_api_rules(path):
    src = code(path)
    calls = re.findall(r"REGIST_MATMUL_OBJ\((.*?)\);", src, re.S)
    assert len(calls) == 1
    args = [a.strip() for a in calls[0].split(",")]
    objects = (len(args) - 2) // 2  # pipe, workspace, then (object, tiling) pairs
    assert 1 <= objects <= 4, "a kernel may define at most 4 Matmul objects"
    assert "SyncAll<false>" not in src, "SyncAll<false> waits for the cube cores (hang)"
    assert not re.search(r"EVENT_ID\d", src), "event ids come from the pipe (PipeWait)"
    assert "GetTensorC" not in src and "MmToUb" not in src, "C to UB packs tail tiles"
    if "SyncAll" in src:
        assert re.search(r"GmWriteFence\(\);\s*SyncAll\(\);", src)


def test_common_header_has_no_c_to_ub_object_and_no_literal_event_ids():
    src = code(COMMON)
    assert "MmToUb" not in src and "VECIN, CubeFormat::ND, T>" not in src
    assert not re.search(r"EVENT_ID\d", src)


def test_op_host_builds_every_cube_tiling_with_c_in_gm():
    ios = []
    for path in HOST:
        ios += re.findall(r"^\s*\{(\w+), (\w+), ([^,]+), (\w+), ", code(path), re.M)
    assert len(ios) == 3 + 4 + 2 + 4 + 4 + 8  # every GemmIo of the six ops
    assert all(io[3] == "false" for io in ios), "cToUb must be false: the kernels' C is in GM"


def test_tiling_data_has_one_cube_tiling_per_registered_object_at_most_eight():
    src = code(ROOT / "ascendc" / "op_kernel" / "mindpet_tiling_data.h")
    counts = dict(re.findall(r"struct (\w+) \{.*?TCubeTiling mm\[(\d+)\]", src, re.S))
    assert counts["MindpetLoraLinearGradTilingData"] == "4"
