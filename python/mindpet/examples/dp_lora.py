"""Data-parallel LoRA fine-tuning of a tiny classifier across processes, launched with ``msrun``.

Two processes on one machine (CPU works; Ascend and GPU the same way)::

    msrun --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=29517 \\
          --log_dir=msrun_log --join=True python/mindpet/examples/dp_lora.py --out dp_out

Run without ``msrun`` (``python python/mindpet/examples/dp_lora.py --out dp_out``) it trains in one process.
Every rank builds the same pre-trained model (deterministic weights), wraps its hidden layer in
``LoRADense``, freezes everything but the LoRA matrices and the head (``freeze_delta``) and trains with
``Model.train`` in data-parallel mode: each rank reads its own shard of the data, gradients are averaged
across ranks (``gradients_mean=True``), so all ranks hold identical weights after every step. Only rank 0
writes checkpoints (``TrainableParamsCheckPoint``: the trainable parameters only).

Files written to ``--out`` (all atomically):

- ``pretrained.ckpt`` (rank 0): the model before fine-tuning;
- ``ckpt/DELTA_CKP-<epoch>_<step>.ckpt`` (rank 0): trainable-only checkpoints;
- ``rank<r>.npz`` (every rank): its final trainable parameters (``param/<name>``), the sample ids of
  each of its batches (``sample_ids``, one row per step) and the model's outputs on a fixed probe batch
  (``probe_outputs``), so the ranks can be compared.

Evaluate with ``mindpet.graph.load_pretrained_and_delta(build_network(), "dp_out/pretrained.ckpt",
"dp_out/ckpt/DELTA_CKP-<last>.ckpt")`` in a single process.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore import Tensor, nn
from mindspore.communication import get_group_size, get_rank, init
from mindspore.train import CheckpointConfig, Model

from mindpet.delta import LoRADense
from mindpet.graph import TrainableParamsCheckPoint, freeze_delta
from mindpet.atomic import atomic_write

IN_DIM, HIDDEN, CLASSES, RANK = 16, 32, 3, 4


class TinyClassifier(nn.Cell):
    """``head(relu(LoRADense(x)))``: a pre-trained encoder layer adapted with LoRA, and a task head."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.RandomState(seed)

        def tensor(*shape: int, scale: float = 0.3) -> Tensor:
            return Tensor((rng.standard_normal(shape) * scale).astype(np.float32))

        self.encoder = LoRADense(IN_DIM, HIDDEN, lora_rank=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                                 lora_a_init=tensor(RANK, IN_DIM), weight_init=tensor(HIDDEN, IN_DIM),
                                 bias_init=tensor(HIDDEN), compute_dtype=ms.float32, activation="relu")
        self.head = nn.Dense(HIDDEN, CLASSES, weight_init=tensor(CLASSES, HIDDEN), bias_init=tensor(CLASSES))

    def construct(self, x):
        return self.head(self.encoder(x))


def build_network(seed: int = 0) -> TinyClassifier:
    """The same pre-trained model in every process (weights drawn from ``seed`` with numpy)."""
    return TinyClassifier(seed)


def make_data(seed: int = 1, samples: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed classification set: ``x`` (samples, IN_DIM) float32, ``y`` (samples,) int32 in [0, CLASSES)."""
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((samples, IN_DIM)).astype(np.float32)
    teacher = rng.standard_normal((IN_DIM, CLASSES))
    return x, np.argmax(x @ teacher, axis=1).astype(np.int32)


def probe_batch() -> np.ndarray:
    """Inputs on which every rank (and an evaluation process) reports the model's outputs."""
    return np.random.RandomState(7).standard_normal((5, IN_DIM)).astype(np.float32)


def shard(x: np.ndarray, y: np.ndarray, rank: int, size: int, batch: int) -> Tuple[ds.Dataset, np.ndarray]:
    """This rank's shard, batched (``x``, ``y`` columns), and the sample ids of each batch (steps, batch)."""
    def pipeline() -> ds.Dataset:
        data = {"x": x, "y": y, "idx": np.arange(len(x), dtype=np.int32)}
        return ds.NumpySlicesDataset(data, shuffle=False, num_shards=size, shard_id=rank).batch(
            batch, drop_remainder=True)

    ids = np.stack([row["idx"] for row in pipeline().create_dict_iterator(output_numpy=True, num_epochs=1)])
    return pipeline().project(["x", "y"]), ids


def trainable_arrays(net: nn.Cell) -> Dict[str, np.ndarray]:
    return {p.name: p.asnumpy() for p in net.trainable_params()}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory (shared by the ranks)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="batch size per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="CPU", help="CPU, GPU or Ascend")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device)
    rank, size = 0, 1
    if os.environ.get("MS_ROLE"):  # launched by msrun; without it the script trains in one process
        init()  # the backend follows the device: mccl on CPU, nccl on GPU, hccl on Ascend
        rank, size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    ms.set_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    net = build_network(args.seed)
    if rank == 0:
        atomic_write(os.path.join(args.out, "pretrained.ckpt"), lambda tmp: ms.save_checkpoint(net, tmp))
    freeze_delta(net, "lora", exclude=["head.*"])  # LoRA matrices and the head train
    x, y = make_data()
    train_set, sample_ids = shard(x, y, rank, size, args.batch)
    callbacks: List = []
    if rank == 0:  # one writer: every rank holds the same weights
        config = CheckpointConfig(save_checkpoint_steps=len(sample_ids), keep_checkpoint_max=2)
        callbacks.append(TrainableParamsCheckPoint(os.path.join(args.out, "ckpt"), config=config))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=args.lr, momentum=0.9)
    Model(net, loss_fn=loss, optimizer=optimizer).train(args.epochs, train_set, callbacks=callbacks,
                                                          dataset_sink_mode=False)

    net.set_train(False)
    probe = net(Tensor(probe_batch())).asnumpy()
    arrays = {f"param/{name}": value for name, value in trainable_arrays(net).items()}
    arrays.update(sample_ids=sample_ids, probe_outputs=probe, world=np.array([rank, size]))
    atomic_write(os.path.join(args.out, f"rank{rank}.npz"), lambda tmp: np.savez(tmp, **arrays))
    print(f"rank {rank}/{size}: trained on samples {sorted(sample_ids.ravel().tolist())}; "
          f"{len(arrays) - 3} trainable parameters written to rank{rank}.npz", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
