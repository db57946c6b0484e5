"""Data-parallel LoRA fine-tuning with msrun: 2 CPU worker processes, ``mindpet/examples/dp_lora.py``.

Checks that each rank trained on its own shard (disjoint, together the whole set), that both ranks end
with identical trainable weights, that they equal single-process training on the combined batches
(data parallelism averages gradients, it does not change the result), that only rank 0 wrote
checkpoints, and that its last checkpoint loads into a fresh single-process model giving rank 0's
outputs. Skips only if ``msrun`` is not installed. Ports on 127.0.0.1; bounded time; every process
the run started is killed at the end.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Set

import numpy as np
import pytest
from mindspore import Tensor, nn

from mindpet.examples import dp_lora
from mindpet.graph import freeze_delta, load_pretrained_and_delta

MSRUN = shutil.which("msrun")
SCRIPT = Path(dp_lora.__file__)
TIMEOUT = 100.0
EPOCHS, BATCH, LR = 3, 4, 0.1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children() -> Dict[int, Set[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: Dict[int, Set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, set()).add(int(entry))
    return tree


def _descendants(pid: int) -> Set[int]:
    tree, found, stack = _children(), set(), [pid]
    while stack:
        for child in tree.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _kill_started(pids: Set[int], marker: str) -> None:
    """SIGKILL the processes this test started that still run (checked by command line: no pid reuse)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def _logs(log_dir: Path) -> str:
    tails = []
    for path in sorted(log_dir.glob("*.log")):
        lines = [l for l in path.read_text(errors="replace").splitlines() if "WARNING" not in l]
        tails.append(f"--- {path.name}\n" + "\n".join(lines[-25:]))
    return "\n".join(tails)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """Run the example under msrun once; return its output directory."""
    if MSRUN is None:
        pytest.skip("msrun is not installed (it comes with the mindspore wheel); cannot launch workers")
    root = tmp_path_factory.mktemp("dp")
    out, log_dir = root / "out", root / "log"
    env = dict(os.environ, GLOG_v="2", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    command = [MSRUN, "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", f"--log_dir={log_dir}", "--join=True", "--cluster_time_out=60",
               str(SCRIPT), "--out", str(out), "--epochs", str(EPOCHS), "--batch", str(BATCH), "--lr", str(LR)]
    proc = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    started: Set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            started |= _descendants(proc.pid)  # workers run in their own sessions: track them by parent
            time.sleep(0.5)
    finally:
        timed_out = proc.poll() is None
        started |= _descendants(proc.pid)
        _kill_started(started, str(root))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not timed_out, f"msrun did not finish within {TIMEOUT:.0f} s\n{_logs(log_dir)}"
    assert proc.returncode == 0, f"msrun failed with exit code {proc.returncode}\n{_logs(log_dir)}"
    return out


def _load(out: Path, rank: int):
    return np.load(out / f"rank{rank}.npz")


def test_each_rank_trained_on_its_own_shard(dp_run):
    ids = [_load(dp_run, r)["sample_ids"] for r in (0, 1)]
    assert all(i.shape == (len(dp_lora.make_data()[0]) // (2 * BATCH), BATCH) for i in ids)
    assert not set(ids[0].ravel()) & set(ids[1].ravel())
    assert sorted(np.concatenate([i.ravel() for i in ids])) == list(range(len(dp_lora.make_data()[0])))
    assert [tuple(_load(dp_run, r)["world"]) for r in (0, 1)] == [(0, 2), (1, 2)]


def test_ranks_end_with_identical_trained_delta_weights(dp_run):
    first, second = _load(dp_run, 0), _load(dp_run, 1)
    names = sorted(k for k in first.files if k.startswith("param/"))
    assert names == ["param/encoder.mindpet_delta_lora_a", "param/encoder.mindpet_delta_lora_b",
                     "param/head.bias", "param/head.weight"]  # frozen weights are not trainable
    for name in names:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert np.abs(first["param/encoder.mindpet_delta_lora_b"]).max() > 1e-3  # lora_b starts at zero: it trained
    np.testing.assert_array_equal(first["probe_outputs"], second["probe_outputs"])


def test_equals_single_process_training_on_the_combined_batches(dp_run, pynative):
    """Averaged gradients of two shards = the gradient of their union: DP changes nothing but speed."""
    first, second = _load(dp_run, 0), _load(dp_run, 1)
    x, y = dp_lora.make_data()
    net = dp_lora.build_network(0)
    freeze_delta(net, "lora", exclude=["head.*"])
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss),
                               nn.Momentum(net.trainable_params(), learning_rate=LR, momentum=0.9))
    step.set_train(True)
    for _ in range(EPOCHS):
        for ids0, ids1 in zip(first["sample_ids"], second["sample_ids"]):
            ids = np.concatenate([ids0, ids1])
            step(Tensor(x[ids]), Tensor(y[ids]))
    for param in net.trainable_params():
        np.testing.assert_allclose(param.asnumpy(), first[f"param/{param.name}"], rtol=1e-4, atol=1e-5,
                                   err_msg=param.name)


def test_rank0_checkpoint_loads_into_a_single_process_model(dp_run, pynative):
    ckpts = sorted(os.listdir(dp_run / "ckpt"))
    assert ckpts == [f"DELTA_CKP-{EPOCHS - 1}_8.ckpt", f"DELTA_CKP-{EPOCHS}_8.ckpt"]  # keep_checkpoint_max=2
    assert sorted(p.name for p in dp_run.iterdir()) == ["ckpt", "pretrained.ckpt", "rank0.npz", "rank1.npz"]
    net = dp_lora.build_network(123)  # other weights: everything must come from the files
    report = load_pretrained_and_delta(net, str(dp_run / "pretrained.ckpt"), str(dp_run / "ckpt" / ckpts[-1]),
                                       strict=True)
    assert report.ok and sorted(report.overridden_keys) == ["encoder.mindpet_delta_lora_a",
                                                            "encoder.mindpet_delta_lora_b", "head.bias",
                                                            "head.weight"]
    net.set_train(False)
    rank0 = _load(dp_run, 0)
    np.testing.assert_allclose(net(Tensor(dp_lora.probe_batch())).asnumpy(), rank0["probe_outputs"],
                               rtol=1e-5, atol=1e-6)
