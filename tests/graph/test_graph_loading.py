"""load_pretrained_and_delta: key report, override order, strict mode, validation before any change."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from mindpet.graph import LoadReport, load_pretrained_and_delta


def values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def save(path, entries, fmt="ckpt"):
    ms.save_checkpoint([{"name": k, "data": Tensor(v)} for k, v in entries.items()], str(path), format=fmt)
    return str(path)


@pytest.fixture
def files(tmp_path, toy_net):
    """A pre-trained file without the head plus a stale key; a delta file with LoRA, head and an extra key."""
    source = values(toy_net(seed=1))
    pretrained = {k: v for k, v in source.items() if not k.startswith("head.")}
    pretrained["old_classifier.weight"] = np.ones((3, 4), np.float32)
    delta = {k: v + 1.0 for k, v in source.items() if "lora" in k or k == "head.weight"}
    delta["encoder.0.dense.bias"] = source["encoder.0.dense.bias"] - 5.0  # also in pretrained: delta wins
    delta["epoch_num"] = np.array(3, np.int32)
    return (save(tmp_path / "pre.ckpt", pretrained), save(tmp_path / "delta.safetensors", delta, "safetensors"),
            pretrained, delta)


def test_report_and_values(files, toy_net):
    pre_path, delta_path, pretrained, delta = files
    net = toy_net(seed=5)
    untouched = net.head.bias.asnumpy().copy()
    report = load_pretrained_and_delta(net, pre_path, delta_path)
    assert isinstance(report, LoadReport) and not report.ok
    assert report.missing_keys == ["head.bias"]
    assert report.unexpected_pretrained_keys == ["old_classifier.weight"]
    assert report.unexpected_delta_keys == ["epoch_num"]
    assert sorted(report.overridden_keys) == sorted(k for k in delta if k in pretrained)
    got = values(net)
    for key, value in got.items():
        if key in delta:
            np.testing.assert_array_equal(value, delta[key])
        elif key in pretrained:
            np.testing.assert_array_equal(value, pretrained[key])
    np.testing.assert_array_equal(got["head.bias"], untouched)


def test_strict_raises_and_changes_nothing(files, toy_net):
    pre_path, delta_path, _, _ = files
    net = toy_net(seed=5)
    before = values(net)
    with pytest.raises(ValueError) as info:
        load_pretrained_and_delta(net, pre_path, delta_path, strict=True)
    for word in ("head.bias", "old_classifier.weight", "epoch_num"):
        assert word in str(info.value)
    for key, value in values(net).items():
        np.testing.assert_array_equal(value, before[key])


def test_strict_passes_when_complete_and_converts_float_dtype(tmp_path, toy_net):
    source = values(toy_net(seed=2))
    pre = save(tmp_path / "pre.ckpt", {k: v for k, v in source.items() if k != "head.bias"})
    delta = save(tmp_path / "d.ckpt", {"head.bias": source["head.bias"].astype(np.float16)})
    net = toy_net(seed=9)
    report = load_pretrained_and_delta(net, pre, delta, strict=True)
    assert report.ok and report.overridden_keys == []
    assert net.head.bias.dtype == ms.float32
    np.testing.assert_array_equal(net.head.bias.asnumpy(), source["head.bias"].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(net.head.weight.asnumpy(), source["head.weight"])


def test_shape_mismatch_is_reported_before_loading(tmp_path, toy_net):
    source = values(toy_net(seed=2))
    pre = save(tmp_path / "pre.ckpt", source)
    delta = save(tmp_path / "d.ckpt", {"head.weight": np.zeros((3, 4), np.float32)})
    net = toy_net(seed=9)
    before = values(net)
    with pytest.raises(ValueError, match=r"head\.weight.*\(2, 4\).*\(3, 4\).*delta_ckpt"):
        load_pretrained_and_delta(net, pre, delta)
    for key, value in values(net).items():
        np.testing.assert_array_equal(value, before[key])


def test_argument_errors(tmp_path, toy_net):
    good = save(tmp_path / "a.ckpt", {"head.bias": np.zeros(2, np.float32)})
    (tmp_path / "a.txt").write_text("x")
    net = toy_net()
    cases = [
        ((object(), good, good), {}, TypeError, "network"),
        ((net, 3, good), {}, TypeError, "pretrained_ckpt"),
        ((net, good, str(tmp_path / "missing.ckpt")), {}, FileNotFoundError, "delta_ckpt"),
        ((net, str(tmp_path / "a.txt"), good), {}, ValueError, "pretrained_ckpt"),
        ((net, good, good), {"strict": "yes"}, TypeError, "strict"),
    ]
    for args, kwargs, error, word in cases:
        with pytest.raises(error, match=word):
            load_pretrained_and_delta(*args, **kwargs)
