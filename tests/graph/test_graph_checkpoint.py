"""TrainableParamsCheckPoint with Model.train, and loading the result with load_pretrained_and_delta.

Training runs are the expensive part, so one PYNATIVE run carries several callbacks (each with its
own directory and config) and the tests below check each callback's files.
"""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn
from mindspore.train import Callback, CheckpointConfig, Model

from mindpet.graph import TrainableParamsCheckPoint, freeze_delta, load_pretrained_and_delta
from mindpet.graph import ckpt_util
from mindpet.atomic import atomic_write, atomic_write_bytes

LORA_AND_HEAD = {f"encoder.{i}.mindpet_delta_lora_{ab}" for i in range(2) for ab in "ab"} | {"head.weight",
                                                                                             "head.bias"}
OPTIMIZER_KEYS = {"global_step", "learning_rate", "beta1_power", "beta2_power"}
MOMENTS = {f"moment{k}.{n}" for k in (1, 2) for n in LORA_AND_HEAD}


def lora_model(net):
    freeze_delta(net, "lora", exclude=["*head*"])
    return Model(net, nn.MSELoss(), nn.Adam(net.trainable_params(), learning_rate=0.05))


def values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def mse(net, x, y):
    return float(((net(Tensor(x)).asnumpy() - y) ** 2).mean())


def files(directory):
    return sorted(os.listdir(directory))


def test_round_trip_reproduces_fine_tuned_outputs(mode, tmp_path, toy_net, train_data, dataset):
    x, y = train_data
    net = toy_net(seed=0)
    pretrained = str(tmp_path / "pretrained.ckpt")
    ms.save_checkpoint(net, pretrained)
    before = values(net)
    loss_before = mse(net, x[:4], y[:4])
    ckpt_dir = tmp_path / "ckpt"
    callback = TrainableParamsCheckPoint(str(ckpt_dir), config=CheckpointConfig(save_checkpoint_steps=1))
    lora_model(net).train(2, dataset(4), callbacks=[callback])  # 2 epochs of 2 steps
    assert mse(net, x[:4], y[:4]) < loss_before

    assert files(ckpt_dir) == ["DELTA_CKP-1_1.ckpt", "DELTA_CKP-1_2.ckpt", "DELTA_CKP-2_1.ckpt",
                               "DELTA_CKP-2_2.ckpt"]
    assert callback.latest_ckpt_file_name == str(ckpt_dir / "DELTA_CKP-2_2.ckpt")
    saved = ms.load_checkpoint(callback.latest_ckpt_file_name)
    assert set(saved) == LORA_AND_HEAD  # trainable weights only: no frozen weights, no optimizer state
    after = values(net)
    for name in LORA_AND_HEAD:
        np.testing.assert_array_equal(saved[name].asnumpy(), after[name])
        assert not np.array_equal(after[name], before[name])
    for name in set(after) - LORA_AND_HEAD:
        np.testing.assert_array_equal(after[name], before[name])

    fresh = toy_net(seed=7)
    assert not np.allclose(fresh(Tensor(x)).asnumpy(), net(Tensor(x)).asnumpy())
    report = load_pretrained_and_delta(fresh, pretrained, callback.latest_ckpt_file_name)
    assert report.ok and report.missing_keys == []
    assert set(report.overridden_keys) == LORA_AND_HEAD
    np.testing.assert_array_equal(fresh(Tensor(x)).asnumpy(), net(Tensor(x)).asnumpy())


# name -> (CheckpointConfig kwargs, expected files) for a 4-step epoch
STEP_CASES = {
    "rotate": (dict(save_checkpoint_steps=1, keep_checkpoint_max=2), ["DELTA_CKP-1_3.ckpt", "DELTA_CKP-1_4.ckpt"]),
    "every_step": (dict(save_checkpoint_steps=1, keep_checkpoint_max=10),
                   [f"DELTA_CKP-1_{i}.ckpt" for i in range(1, 5)]),
    "steps3_then_end": (dict(save_checkpoint_steps=3), ["DELTA_CKP-1_3.ckpt", "DELTA_CKP-1_4.ckpt"]),
    "steps4": (dict(save_checkpoint_steps=4), ["DELTA_CKP-1_4.ckpt"]),
}


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, toy_net, dataset):
    """One 4-step PYNATIVE epoch observed by several callbacks."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    root = tmp_path_factory.mktemp("shared_run")
    callbacks = {case: TrainableParamsCheckPoint(str(root / case), config=CheckpointConfig(**kwargs))
                 for case, (kwargs, _) in STEP_CASES.items()}
    (root / "taken").mkdir()
    (root / "taken" / "DELTA_CKP-1_1.ckpt").write_bytes(b"an earlier run")
    callbacks["taken"] = TrainableParamsCheckPoint(str(root / "taken"), config=CheckpointConfig(keep_checkpoint_max=1))
    callbacks["optimizer"] = TrainableParamsCheckPoint(
        str(root / "optimizer"), prefix="opt", save_optimizer_state=True,
        config=CheckpointConfig(save_checkpoint_steps=4, format="safetensors"))
    net = toy_net(seed=0)
    pretrained = str(root / "pretrained.safetensors")
    ms.save_checkpoint(net, pretrained, format="safetensors")
    model = lora_model(net)
    try:
        model.train(1, dataset(), callbacks=list(callbacks.values()))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    return SimpleNamespace(root=root, callbacks=callbacks, net=net, model=model, pretrained=pretrained)


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_save_steps_and_rotation(shared_run, case):
    expected = STEP_CASES[case][1]
    directory = shared_run.root / case
    assert files(directory) == expected
    assert shared_run.callbacks[case].saved_files == [str(directory / name) for name in expected]


def test_existing_prefix_gets_a_suffix_and_is_never_deleted(shared_run):
    callback, directory = shared_run.callbacks["taken"], shared_run.root / "taken"
    assert callback.prefix == "DELTA_CKP_1"
    assert files(directory) == ["DELTA_CKP-1_1.ckpt", "DELTA_CKP_1-1_4.ckpt"]
    assert (directory / "DELTA_CKP-1_1.ckpt").read_bytes() == b"an earlier run"


def test_optimizer_state_on_request_in_safetensors(pynative, shared_run, toy_net, train_data):
    callback = shared_run.callbacks["optimizer"]
    assert files(shared_run.root / "optimizer") == ["opt-1_4.safetensors"]
    saved = ms.load_checkpoint(callback.latest_ckpt_file_name, format="safetensors")
    assert set(saved) == LORA_AND_HEAD | OPTIMIZER_KEYS | MOMENTS
    for param in shared_run.model.train_network.optimizer.get_parameters():
        if param.name in MOMENTS or param.name in OPTIMIZER_KEYS:
            np.testing.assert_array_equal(saved[param.name].asnumpy(), param.asnumpy())
    assert int(saved["global_step"].asnumpy().reshape(-1)[0]) == 4
    default = ms.load_checkpoint(shared_run.callbacks["steps4"].latest_ckpt_file_name)
    assert set(default) == LORA_AND_HEAD

    fresh = toy_net(seed=3)
    report = load_pretrained_and_delta(fresh, shared_run.pretrained, callback.latest_ckpt_file_name)
    assert report.missing_keys == [] and report.unexpected_pretrained_keys == []
    assert set(report.unexpected_delta_keys) == OPTIMIZER_KEYS | MOMENTS
    x = Tensor(train_data[0])
    np.testing.assert_array_equal(fresh(x).asnumpy(), shared_run.net(x).asnumpy())


class FakeClock:
    """Stands in for the ``time`` module of ckpt_util; a callback advances it each step."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


class Tick(Callback):
    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_train_step_end(self, run_context):
        self.clock.now += self.seconds


def test_time_policies(pynative, monkeypatch, tmp_path, toy_net, dataset):
    clock = FakeClock()
    monkeypatch.setattr(ckpt_util, "time", clock)
    # 20 s steps. Every 30 s: saves after step 2 (40 s) and step 4 (40 s later).
    seconds = TrainableParamsCheckPoint(str(tmp_path / "seconds"), config=CheckpointConfig(
        save_checkpoint_steps=0, save_checkpoint_seconds=30))
    # A save each step, keeping one per minute: step 2 is dropped when step 3 falls in the same minute.
    minutes = TrainableParamsCheckPoint(str(tmp_path / "minutes"), config=CheckpointConfig(
        save_checkpoint_steps=1, keep_checkpoint_max=0, keep_checkpoint_per_n_minutes=1))
    lora_model(toy_net()).train(1, dataset(), callbacks=[Tick(clock, 20.0), seconds, minutes])
    assert files(tmp_path / "seconds") == ["DELTA_CKP-1_2.ckpt", "DELTA_CKP-1_4.ckpt"]
    assert files(tmp_path / "minutes") == ["DELTA_CKP-1_1.ckpt", "DELTA_CKP-1_3.ckpt", "DELTA_CKP-1_4.ckpt"]


def test_failed_save_leaves_no_partial_file(pynative, monkeypatch, tmp_path, toy_net, dataset):
    real_save = ckpt_util.save_checkpoint
    calls = []

    def crashing_save(save_obj, ckpt_file_name, **kwargs):
        calls.append(ckpt_file_name)
        if len(calls) == 1:
            return real_save(save_obj, ckpt_file_name, **kwargs)
        with open(ckpt_file_name, "wb") as handle:  # half a file, then the "crash"
            handle.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_util, "save_checkpoint", crashing_save)
    callback = TrainableParamsCheckPoint(str(tmp_path), config=CheckpointConfig(save_checkpoint_steps=1))
    with pytest.raises(OSError, match="disk full"):
        lora_model(toy_net()).train(1, dataset(), callbacks=[callback])
    assert len(calls) == 2
    assert all(os.path.dirname(os.path.dirname(c)) == str(tmp_path) for c in calls)  # scratch dir beside
    assert files(tmp_path) == ["DELTA_CKP-1_1.ckpt"]  # no 1_2 file, no scratch left over
    assert set(ms.load_checkpoint(str(tmp_path / "DELTA_CKP-1_1.ckpt"))) == LORA_AND_HEAD


def test_atomic_write_keeps_previous_file(tmp_path):
    target = tmp_path / "state.bin"
    atomic_write_bytes(str(target), b"version 1")

    def crash(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"vers")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(target), crash)
    assert target.read_bytes() == b"version 1"
    assert files(tmp_path) == ["state.bin"]
    with pytest.raises(OSError, match="no file"):
        atomic_write(str(target), lambda tmp: None)
    atomic_write_bytes(str(target), b"version 2")
    assert target.read_bytes() == b"version 2"
    assert files(tmp_path) == ["state.bin"]


def test_constructor_errors(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (dict(directory=None), ValueError, "directory"),
        (dict(directory=""), ValueError, "directory"),
        (dict(directory=str(link)), ValueError, "symbolic link"),
        (dict(directory=str(link) + "/"), ValueError, "symbolic link"),
        (dict(directory=str(a_file)), ValueError, "not a directory"),
        (dict(directory=str(tmp_path), config={"save_checkpoint_steps": 1}), TypeError, "config"),
        (dict(directory=str(tmp_path), prefix="a/b"), ValueError, "prefix"),
        (dict(directory=str(tmp_path), save_optimizer_state="yes"), TypeError, "save_optimizer_state"),
    ]
    for kwargs, error, word in cases:
        with pytest.raises(error, match=word):
            TrainableParamsCheckPoint(**kwargs)
    new_dir = tmp_path / "made" / "here"
    TrainableParamsCheckPoint(str(new_dir))
    assert new_dir.is_dir()
    with pytest.warns(UserWarning, match="async_save"):
        TrainableParamsCheckPoint(str(new_dir), config=CheckpointConfig(async_save=True))


def _model_with_loss_cell(net):
    freeze_delta(net, "lora", exclude=["*head*"])
    return Model(nn.WithLossCell(net, nn.MSELoss()), optimizer=nn.Adam(net.trainable_params(), 0.05))


def _model_of_train_cell(net):
    freeze_delta(net, "lora", exclude=["*head*"])
    optimizer = nn.Adam(net.trainable_params(), 0.05)
    return Model(nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), optimizer))


@pytest.mark.parametrize("build", [_model_with_loss_cell, _model_of_train_cell],
                         ids=["WithLossCell", "TrainOneStepCell"])
def test_wrappers_are_stripped(pynative, tmp_path, toy_net, dataset, build):
    net = toy_net()
    callback = TrainableParamsCheckPoint(str(tmp_path), config=CheckpointConfig(save_checkpoint_steps=2))
    build(net).train(1, dataset(4), callbacks=[callback])
    saved = ms.load_checkpoint(callback.latest_ckpt_file_name)
    assert set(saved) == LORA_AND_HEAD
    for name, value in values(net).items():
        if name in saved:
            np.testing.assert_array_equal(saved[name].asnumpy(), value)


def test_loss_scale_cell_state_is_not_a_weight(tmp_path, toy_net):
    # TrainOneStepWithLossScaleCell does not run on CPU; the selection is checked on the cell itself.
    net = toy_net()
    freeze_delta(net, "lora", exclude=["*head*"])
    optimizer = nn.Adam(net.trainable_params(), 0.05)
    train_cell = nn.TrainOneStepWithLossScaleCell(nn.WithLossCell(net, nn.MSELoss()), optimizer,
                                                  scale_sense=Tensor(np.float32(64.0)))
    weights_only = TrainableParamsCheckPoint(str(tmp_path / "a")).select_parameters(train_cell)
    assert {p.name for p in weights_only} == LORA_AND_HEAD
    with_state = TrainableParamsCheckPoint(str(tmp_path / "b"), save_optimizer_state=True)
    names = {p.name for p in with_state.select_parameters(train_cell)}
    assert names == LORA_AND_HEAD | OPTIMIZER_KEYS | MOMENTS | {"scale_sense"}
