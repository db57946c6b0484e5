"""save_delta / load_delta: files written and read back, config contents, key reports, versions, atomicity."""
import hashlib
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor
from safetensors.numpy import load_file, save_file

import mindpet
import mindpet.delta_io as delta_io
from mindpet.delta import LoRADense

from integration_models import MLP, f64, randomize

LORA = {"lora_rank": 2, "lora_alpha": 3.0}


def _model(rank=2, alpha=3.0, seed=None, adapter=True):
    net = MLP()
    mindpet.inject(net, "lora", ["fc1", "blocks.0"], lora_rank=rank, lora_alpha=alpha)
    if adapter:
        mindpet.inject(net, "adapter", "head", bottleneck_size=2)
    if seed is not None:
        randomize(net, "mindpet_delta_", seed=seed)
    return net


def _values(net, pattern="mindpet_delta_"):
    return {n: f64(p) for n, p in net.parameters_and_names() if pattern in n}


def _config(directory):
    with open(os.path.join(directory, "delta_config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _write_config(directory, config):
    with open(os.path.join(directory, "delta_config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle)


def test_round_trip_files_and_config(pynative, tmp_path):
    src = _model(seed=1)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32))
    directory = str(tmp_path / "run" / "delta")
    assert mindpet.save_delta(src, directory) == directory
    assert sorted(os.listdir(directory)) == ["delta.safetensors", "delta_config.json"]

    tensors = load_file(os.path.join(directory, "delta.safetensors"))
    saved = _values(src)
    assert sorted(tensors) == sorted(saved)  # only the delta: no weight, bias or head
    for name, value in saved.items():
        np.testing.assert_array_equal(tensors[name], value.astype(np.float32))

    config = _config(directory)
    assert config["format"] == "mindpet.delta" and config["format_version"] == "1.0"
    assert config["mindpet_version"] == mindpet.__version__
    assert config["methods"] == ["adapter", "lora"]
    assert config["target_modules"] == {"adapter": ["head"], "lora": ["blocks.0", "fc1"]}
    assert config["layers"]["fc1"] == {"method": "lora", "class": "LoRADense", "in_channels": 6, "out_channels": 5,
                                       "has_bias": True, "lora_rank": 2, "lora_alpha": 3.0, "lora_dropout": 0.0}
    assert config["layers"]["head"]["bottleneck_size"] == 2 and config["layers"]["blocks.0"]["has_bias"] is False
    assert config["tensors"]["fc1.mindpet_delta_lora_a"] == {"shape": [2, 6], "dtype": "float32"}
    with open(os.path.join(directory, "delta.safetensors"), "rb") as handle:
        assert config["tensors_sha256"] == hashlib.sha256(handle.read()).hexdigest()

    dst = _model(seed=2)
    report = mindpet.load_delta(dst, directory)
    assert report.ok and sorted(report.loaded_keys) == sorted(saved) and report.format_version == "1.0"
    for name, value in _values(dst).items():
        np.testing.assert_array_equal(value, saved[name])
    np.testing.assert_array_equal(dst(x).asnumpy(), src(x).asnumpy())


def test_include_trainable_saves_the_head_too(pynative, tmp_path):
    src = _model(seed=1, adapter=False)
    mindpet.graph.freeze_delta(src, "lora", exclude=["head.*"])
    mindpet.save_delta(src, str(tmp_path), include_trainable=True)
    assert sorted(load_file(str(tmp_path / "delta.safetensors"))) == sorted(
        list(_values(src)) + ["head.weight", "head.bias"])
    dst = MLP()
    mindpet.inject(dst, "lora", ["fc1", "blocks.0"], **LORA)
    dst.head.weight.set_data(Tensor(np.zeros((3, 4), np.float32)))
    assert mindpet.load_delta(dst, str(tmp_path)).ok
    np.testing.assert_array_equal(f64(dst.head.weight), f64(src.head.weight))


def test_strict_reports_missing_unexpected_shape_and_hyperparameter_mismatches(pynative, tmp_path):
    mindpet.save_delta(_model(seed=1), str(tmp_path))
    other = MLP()  # LoRA on fc1 with another rank, none on blocks.0, a different alpha and adapter on head
    mindpet.inject(other, "lora", ["fc1"], lora_rank=3, lora_alpha=3.0)
    mindpet.inject(other, "lora", ["head"], lora_rank=2, lora_alpha=8)
    before = _values(other)
    with pytest.raises(ValueError) as info:
        mindpet.load_delta(other, str(tmp_path))
    message = str(info.value)
    for word in ("head.mindpet_delta_lora_a", "blocks.0.mindpet_delta_lora_b", "fc1.mindpet_delta_lora_a",
                 "fc1: lora_rank is 2 in the file, 3 in the model"):
        assert word in message
    assert all(np.array_equal(v, before[k]) for k, v in _values(other).items())  # nothing loaded

    report = mindpet.load_delta(other, str(tmp_path), strict=False)
    assert not report.ok and report.loaded_keys == []
    assert sorted(report.missing_keys) == ["head.mindpet_delta_lora_a", "head.mindpet_delta_lora_b"]
    assert "blocks.0.mindpet_delta_lora_a" in report.unexpected_keys
    assert ("fc1.mindpet_delta_lora_a", (2, 6), (3, 6)) in report.mismatched_keys

    alpha = _model(alpha=6.0, seed=3)
    with pytest.raises(ValueError, match="lora_alpha is 3.0 in the file, 6.0 in the model"):
        mindpet.load_delta(alpha, str(tmp_path))
    report = mindpet.load_delta(alpha, str(tmp_path), strict=False)
    assert len(report.config_mismatches) == 2 and not report.missing_keys and len(report.loaded_keys) == 8


def test_versions_newer_minor_warns_incompatible_major_fails(pynative, tmp_path):
    src = _model(seed=1)
    mindpet.save_delta(src, str(tmp_path))
    config = _config(str(tmp_path))
    config["format_version"] = "1.7"
    config["quantization"] = {"bits": 4}
    _write_config(str(tmp_path), config)
    dst = _model(seed=2)
    with pytest.warns(UserWarning, match=r"\['quantization'\].*newer format version 1.7"):
        assert mindpet.load_delta(dst, str(tmp_path)).format_version == "1.7"
    np.testing.assert_array_equal(f64(dst.fc1.mindpet_delta_lora_b), f64(src.fc1.mindpet_delta_lora_b))

    config["format_version"] = "2.0"
    _write_config(str(tmp_path), config)
    with pytest.raises(ValueError, match="format version 2.0, incompatible"):
        mindpet.load_delta(dst, str(tmp_path))
    _write_config(str(tmp_path), {"peft_type": "LORA"})
    with pytest.raises(ValueError, match="not a mindpet delta config"):
        mindpet.load_delta(dst, str(tmp_path))


def test_tensors_from_another_save_are_detected(pynative, tmp_path):
    mindpet.save_delta(_model(seed=1), str(tmp_path))
    tensors = load_file(str(tmp_path / "delta.safetensors"))
    tensors["fc1.mindpet_delta_lora_b"] = tensors["fc1.mindpet_delta_lora_b"] + 1.0
    save_file(tensors, str(tmp_path / "delta.safetensors"))
    with pytest.raises(ValueError, match="SHA-256"):
        mindpet.load_delta(_model(), str(tmp_path))


def test_interrupted_save_keeps_the_previous_pair(pynative, tmp_path, monkeypatch):
    first = _model(seed=1)
    mindpet.save_delta(first, str(tmp_path))
    files = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}

    def crash(arrays, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(delta_io, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        mindpet.save_delta(_model(seed=2), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(files)  # no scratch files left behind
    assert all((tmp_path / n).read_bytes() == data for n, data in files.items())
    monkeypatch.undo()
    dst = _model(seed=5)
    assert mindpet.load_delta(dst, str(tmp_path)).ok
    np.testing.assert_array_equal(f64(dst.fc1.mindpet_delta_lora_a), f64(first.fc1.mindpet_delta_lora_a))


@pytest.mark.parametrize("dtype, stored", [(ms.float16, "float16"), (ms.bfloat16, "bfloat16")])
def test_half_precision_parameters_round_trip(pynative, tmp_path, dtype, stored):
    def layer(seed):
        rng = np.random.default_rng(seed)
        a = Tensor(rng.standard_normal((2, 4)).astype(np.float32))
        b = Tensor(rng.standard_normal((3, 2)).astype(np.float32))
        return LoRADense(4, 3, 2, 2, 0.0, lora_a_init=a, lora_b_init=b, param_init_type=dtype)

    src = layer(1)
    mindpet.save_delta(src, str(tmp_path))
    assert _config(str(tmp_path))["tensors"]["mindpet_delta_lora_a"]["dtype"] == stored
    assert load_file(str(tmp_path / "delta.safetensors"))["mindpet_delta_lora_a"].dtype == (
        np.float16 if dtype == ms.float16 else np.float32)
    dst = layer(2)
    mindpet.load_delta(dst, str(tmp_path))
    assert dst.mindpet_delta_lora_a.dtype == dtype
    np.testing.assert_array_equal(f64(dst.mindpet_delta_lora_a), f64(src.mindpet_delta_lora_a))


def test_bad_arguments_and_files(pynative, tmp_path):
    net = _model(seed=1)
    with pytest.raises(TypeError, match="'model'"):
        mindpet.save_delta("net", str(tmp_path))
    with pytest.raises(TypeError, match="'path'"):
        mindpet.save_delta(net, 3)
    with pytest.raises(TypeError, match="'include_trainable'"):
        mindpet.save_delta(net, str(tmp_path), include_trainable="yes")
    with pytest.raises(ValueError, match="no delta parameter"):
        mindpet.save_delta(MLP(), str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mindpet.save_delta(net, str(tmp_path / "file"))
    with pytest.raises(FileNotFoundError, match="delta_config.json"):
        mindpet.load_delta(net, str(tmp_path / "nowhere"))
    mindpet.save_delta(net, str(tmp_path / "d"))
    with pytest.raises(TypeError, match="'strict'"):
        mindpet.load_delta(net, str(tmp_path / "d"), strict=None)
    mindpet.merge_lora(net)
    with pytest.raises(ValueError, match="merged LoRA layers.*unmerge_lora"):
        mindpet.load_delta(net, str(tmp_path / "d"))
    os.remove(tmp_path / "d" / "delta.safetensors")
    with pytest.raises(FileNotFoundError, match="delta.safetensors"):
        mindpet.load_delta(net, str(tmp_path / "d"))
