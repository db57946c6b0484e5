"""Crash safety of TrainableParamsCheckPoint: SIGKILL in the middle of a save loses nothing already saved.

A child process (``ckpt_saver.py``) saves 16 MiB checkpoints in a loop; the parent kills it with
SIGKILL at a random point inside a save (seeded delays, scaled to the child's measured save time).
Afterwards every file under a final checkpoint name must be complete, the previous checkpoint must be
there and load through ``load_pretrained_and_delta`` with its exact values. Scratch files of the
interrupted save may remain, but only under hidden ``.partial`` names.
"""
from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.graph import load_pretrained_and_delta

SAVER = Path(__file__).with_name("ckpt_saver.py")
SHAPE = (2048, 2048)
SAVES = 6
FINAL = re.compile(r"^DELTA_CKP-1_(\d+)\.(ckpt|safetensors)$")
TIMEOUT = 60.0


class Net(nn.Cell):
    """The saver's network, to load into."""

    def __init__(self):
        super().__init__()
        self.mindpet_delta_lora_a = Parameter(Tensor(np.zeros(SHAPE, np.float32)), name="mindpet_delta_lora_a")
        self.frozen = Parameter(Tensor(np.ones((4,), np.float32)), name="frozen", requires_grad=False)

    def construct(self, x):
        return x


def _reader(proc: subprocess.Popen) -> "queue.Queue[Optional[str]]":
    """Lines of the child's stdout as they come (None at the end), read by a thread: waits stay bounded."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_words(lines, proc: subprocess.Popen, deadline: float) -> List[str]:
    try:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        line = None
    if line is None:
        raise AssertionError(f"saver ended or timed out early (exit {proc.poll()}): {proc.stderr.read()[-2000:]}")
    return line.split()


def _run_and_kill(directory: Path, fmt: str, rng: random.Random, unsafe: bool = False) -> Tuple[int, Optional[int]]:
    """Run the saver; SIGKILL it inside save ``k`` (3 <= k <= SAVES). Return (k, last completed step).

    Safe writer: at a random point of save ``k`` (a seeded fraction of the shortest save so far; on a
    busy machine the parent may read late, and the kill then lands in a later save or between saves).
    Unsafe writer (control): save 3, when it reports that the final file is half-written (it then waits).
    """
    target = 3 if unsafe else rng.randint(3, SAVES)
    env = dict(os.environ, GLOG_v="3", PYTHONUNBUFFERED="1")
    command = [sys.executable, str(SAVER), str(directory), fmt, str(SAVES)] + (["unsafe"] if unsafe else [])
    proc = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines, deadline = _reader(proc), time.monotonic() + TIMEOUT
    last_done, durations, started = None, [], 0.0
    try:
        while True:
            words = _next_words(lines, proc, deadline)
            now = time.monotonic()
            step = int(words[1]) if words[0] in ("start", "done") else None
            if words[0] == "start":
                started = now
                if step == target and not unsafe:
                    time.sleep(rng.uniform(0.0, 0.9) * min(durations))
                    break
            elif words[0] == "done":
                durations.append(now - started)
                last_done = step
            elif words[0] == "copying" and words[1].startswith(f"DELTA_CKP-1_{target}."):
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        # The child may be ahead of what was read (a busy machine delays the parent): its last words count.
        while True:
            line = lines.get(timeout=TIMEOUT)
            if line is None:
                break
            if line.startswith("done "):
                last_done = int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return target, last_done


def _problems(directory: Path, fmt: str, last_done: int) -> List[str]:
    """What is wrong with the directory after the kill (empty when the checkpoints are crash-safe)."""
    problems, steps = [], []
    for name in sorted(os.listdir(directory)):
        match = FINAL.match(name)
        if not match:
            if not (name.startswith(".") and name.endswith(".partial")):
                problems.append(f"unexpected file {name}")
            continue
        step = int(match.group(1))
        steps.append(step)
        try:
            values = ms.load_checkpoint(str(directory / name), format=fmt)
        except Exception as err:  # pylint: disable=broad-except
            problems.append(f"{name} does not load: {err}")
            continue
        data = values.get("mindpet_delta_lora_a")
        if set(values) != {"mindpet_delta_lora_a"} or data.shape != SHAPE or not np.all(data.asnumpy() == step):
            problems.append(f"{name} does not hold the complete step-{step} state")
    if last_done not in steps:
        problems.append(f"the previous checkpoint (step {last_done}) is missing: {steps}")
    return problems


@pytest.mark.parametrize("seed,fmt", [(0, "ckpt"), (1, "safetensors"), (2, "ckpt")])
def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path, seed, fmt):
    directory = tmp_path / "ckpt"
    target, last_done = _run_and_kill(directory, fmt, random.Random(seed))
    assert last_done is not None and last_done >= target - 1
    assert _problems(directory, fmt, last_done) == []
    steps = sorted(int(FINAL.match(n).group(1)) for n in os.listdir(directory) if FINAL.match(n))
    # keep_checkpoint_max=2, plus a save that completed but was not reported before the kill
    assert set(steps) <= {last_done - 1, last_done, last_done + 1}, steps
    pretrained = tmp_path / f"pretrained.{fmt}"
    ms.save_checkpoint(Net(), str(pretrained), format=fmt)
    net = Net()
    report = load_pretrained_and_delta(net, str(pretrained), str(directory / f"DELTA_CKP-1_{last_done}.{fmt}"),
                                       strict=True)
    assert report.ok and report.overridden_keys == ["mindpet_delta_lora_a"]
    assert np.all(net.mindpet_delta_lora_a.asnumpy() == float(last_done))


def test_control_non_atomic_writer_is_caught(tmp_path):
    """The same check flags a writer that fills the final name in place: the test has teeth."""
    directory = tmp_path / "ckpt"
    target, last_done = _run_and_kill(directory, "ckpt", random.Random(3), unsafe=True)
    problems = _problems(directory, "ckpt", last_done)
    assert any(p.startswith(f"DELTA_CKP-1_{target}.ckpt") for p in problems), problems
    with pytest.raises(ValueError, match=f"DELTA_CKP-1_{target}.ckpt"):
        load_pretrained_and_delta(Net(), str(directory / f"DELTA_CKP-1_{last_done}.ckpt"),
                                  str(directory / f"DELTA_CKP-1_{target}.ckpt"))
