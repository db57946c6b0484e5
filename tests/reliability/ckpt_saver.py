"""Child process of ``test_crash_safe_checkpoints.py``: saves checkpoints in a loop until killed.

``python ckpt_saver.py DIR FORMAT SAVES [unsafe]`` builds a network with a large trainable parameter
(and a frozen one that must never be saved), then for step 1..SAVES fills the trainable parameter with
the value ``step`` and lets ``TrainableParamsCheckPoint`` save it, printing ``start <step>`` before and
``done <step> <path>`` after each save (flushed), so the parent can kill it in the middle of a save.

``unsafe`` is the control experiment: the atomic write is replaced by a plain copy into the final
name that, from the third save on, stops half-way (printing ``copying <name>`` and waiting to be
killed), as a non-atomic writer killed mid-write would.
"""
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore.train import CheckpointConfig, RunContext

from mindpet.graph import TrainableParamsCheckPoint, ckpt_util

SHAPE = (2048, 2048)  # 16 MiB of float32: a save takes a measurable fraction of a second


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mindpet_delta_lora_a = Parameter(Tensor(np.zeros(SHAPE, np.float32)), name="mindpet_delta_lora_a")
        self.frozen = Parameter(Tensor(np.ones((4,), np.float32)), name="frozen", requires_grad=False)

    def construct(self, x):
        return x


class CallbackParams(dict):
    """What ``Model.train`` hands to callbacks: a dict with attribute access."""

    __getattr__ = dict.__getitem__


_UNSAFE_SAVES = [0]


def unsafe_write(final_path: str, write) -> str:
    """A non-atomic writer: serialise aside, then copy into the final name; from the third save on, stop
    half-way and wait to be killed."""
    _UNSAFE_SAVES[0] += 1
    scratch = tempfile.mkdtemp()
    try:
        side = os.path.join(scratch, os.path.basename(final_path))
        write(side)
        with open(side, "rb") as handle:
            data = handle.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(final_path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        if _UNSAFE_SAVES[0] >= 3:
            print(f"copying {os.path.basename(final_path)}", flush=True)
            time.sleep(60.0)  # the parent kills the process here
        handle.write(data[len(data) // 2:])
    return final_path


def main(directory: str, fmt: str, saves: int) -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    net = Net()
    callback = TrainableParamsCheckPoint(directory, config=CheckpointConfig(
        save_checkpoint_steps=1, keep_checkpoint_max=2, format=fmt))
    for step in range(1, saves + 1):
        net.mindpet_delta_lora_a.set_data(Tensor(np.full(SHAPE, float(step), np.float32)))
        params = CallbackParams(cur_step_num=step, cur_epoch_num=1, batch_num=saves, train_network=net)
        print(f"start {step}", flush=True)
        callback.on_train_step_end(RunContext(params))
        print(f"done {step} {callback.latest_ckpt_file_name}", flush=True)


if __name__ == "__main__":
    if sys.argv[4:] == ["unsafe"]:
        ckpt_util.atomic_write = unsafe_write
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
