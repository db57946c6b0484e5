"""Static checks of the Ascend C sources: documented API rules the type check
(test_ascend_typecheck.py) cannot see stay kept in every kernel and op_host (ascendc/README.md,
"Documented API rules checked"). Text checks only: they catch a regression of a known rule, not a
wrong API call. Each rule's checker is also run on a small source that breaks it."""
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
    # SyncAll<true> (the default) synchronises the vector cores only, which is what stage 2 needs;
    # its implementation starts with PipeBarrier<PIPE_ALL>, so no fence is needed before it.
    assert not re.search(r"GmWriteFence\(\);\s*SyncAll", src), "redundant fence before SyncAll"
    assert "CAST_ROUND" not in src
    assert not re.search(r"TQue<[^>]*,\s*[2-9]\s*>", src), "TQue depth 1 (no queue is enqueued twice in a row)"


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


# ---- End() after IterateAll, no in-place Erf (checkers, their sanity, then every source) --------

def statements(src: str) -> list[str]:
    """The source's statements (split at ';', '{' and '}'), whitespace collapsed."""
    return [" ".join(t.split()) for t in re.split(r"[;{}]", src) if t.strip()]


def iterate_all_without_end(src: str) -> list[str]:
    """Every `obj.IterateAll(...)` whose next statement is not `obj.End()`: the End reference says
    End() must be called when switching between Matmul objects, and the kernels switch objects
    inside a chunk (the multi-object samples call it right after each IterateAll)."""
    stmts = statements(src)
    bad = []
    for i, st in enumerate(stmts):
        call = re.search(r"(\w+)\s*\.\s*IterateAll\s*\(", st)
        if call and (i + 1 >= len(stmts) or stmts[i + 1] != f"{call.group(1)}.End()"):
            bad.append(st)
    return bad


def top_level_args(call_args: str) -> list[str]:
    args, depth, cur = [], 0, ""
    for ch in call_args:
        depth += ch in "([<"
        depth -= ch in ")]>"
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()]


# How many leading tensor arguments of each call must be distinct buffers: Erf forbids overlapping
# source and destination (Erf reference, constraints); ActForward / ActBackward run Erf on their
# scratch boxes, so their tensors must be distinct too.
DISTINCT_TENSORS = {"Erf": 2, "ActForward": 3, "ActBackward": 4}


def overlapping_operands(src: str) -> list[str]:
    bad = []
    for name, count in DISTINCT_TENSORS.items():
        for call in re.finditer(rf"(?<![\w.]){name}\s*(?:<[^;()]*>)?\s*\(([^;]*)\)\s*;", src):
            args = top_level_args(call.group(1))[:count]
            if len(set(args)) != len(args):
                bad.append(call.group(0))
    return bad


def test_checkers_catch_the_broken_rules():
    assert iterate_all_without_end("mmA_.IterateAll(c); mmB_.SetTensorA(a, false); mmB_.IterateAll(d); mmB_.End();") \
        == ["mmA_.IterateAll(c)"]
    assert iterate_all_without_end("mm.IterateAll(c, 1);\n  mm.End();") == []
    assert iterate_all_without_end("a.IterateAll(c); b.End();") == ["a.IterateAll(c)"]
    assert overlapping_operands("Muls(t, z, k, n); Erf(t, t, n);") == ["Erf(t, t, n);"]
    assert overlapping_operands("Erf<float, false>(y[0], y[0], n);") == ["Erf<float, false>(y[0], y[0], n);"]
    assert overlapping_operands("Erf(y, tmp, n); ActForward(z32, z32, tmp, n, act);") \
        == ["ActForward(z32, z32, tmp, n, act);"]
    assert overlapping_operands("ActBackward(g32, z32, s0, s1, n, act); Erf(y, t, n);") == []


SOURCES = KERNELS + [COMMON]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_iterate_all_is_followed_by_end(path):
    assert iterate_all_without_end(code(path)) == []


def test_iterate_all_is_called_somewhere():
    assert sum(len(re.findall(r"\.IterateAll\(", code(p))) for p in SOURCES) >= 1


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_erf_runs_in_place(path):
    assert overlapping_operands(code(path)) == []


def test_erf_and_activations_are_called():
    src = "\n".join(code(p) for p in SOURCES)
    for name in DISTINCT_TENSORS:
        assert re.search(rf"(?<![\w.]){name}\s*\(", src), name


# ---- op_host: checked returns, null checks, batch schedule mode ---------------------------------

HOST_COMMON = ROOT / "ascendc" / "op_host" / "mindpet_host_common.h"


def test_op_host_checks_every_matmul_tiling_setter():
    src = code(HOST_COMMON)
    body = src[src.index("inline bool FillCubeTiling"):src.index("inline T* TilingData")]
    calls = re.findall(r"t\.(\w+)\(", body)
    assert {"SetFixSplit", "SetBufferSpace", "SetShape", "SetOrgShape"} <= set(calls)
    for name in calls:
        want = "!= -1" if name == "GetTiling" else "== 0"
        assert re.search(rf"t\.{name}\([^;]*\) {want}", body), f"{name}'s return value is ignored"


@pytest.mark.parametrize("path", HOST, ids=lambda p: p.stem)
def test_op_host_null_checks_tiling_data_and_attributes(path):
    src = code(path)
    assert "GetTilingData<" not in src and "GetAttrs()" not in src, "use TilingData<T> / Attr<T> (null-checked)"
    for fn in re.findall(r"ge::graphStatus (\w+Tiling)\(gert::TilingContext\* ctx\) \{(.*?)\n\}", src, re.S):
        body = fn[1]
        assert "TilingData<" in body and re.search(r"if \(td == nullptr", body), fn[0]


def test_backward_ops_use_batch_schedule_mode():
    """The three backward kernels use SyncAll: their TilingFuncs set schedule mode 1 (SyncAll reference)."""
    grad_funcs = 0
    for path in HOST:
        for name, body in re.findall(r"ge::graphStatus (\w+Tiling)\(gert::TilingContext\* ctx\) \{(.*?)\n\}",
                                     code(path), re.S):
            if name.endswith("GradTiling"):
                grad_funcs += 1
                assert "if (!UseBatchScheduleMode(ctx)) return ge::GRAPH_FAILED;" in body, name
    assert grad_funcs == 3
    assert "SetScheduleMode(kBatchMode)" in code(HOST_COMMON) and "kBatchMode = 1" in code(HOST_COMMON)
