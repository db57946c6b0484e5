"""export_peft / import_peft: a hand-written PEFT adapter, round trips on the BERT port, errors."""
import hashlib
import json
import math
import os
import shutil
import struct

import numpy as np
import pytest
from mindspore import Tensor, nn
from safetensors.numpy import load_file, save_file

import mindpet
import mindpet._safetensors as safetensors_reader
from mindpet.delta import LoRADense

from benchmarks.models.bert import BertEncoder
from benchmarks.models.hf_weights import convert_hf_state
from mindpet.peft_io import tensors_sha256
from integration_models import TINY, MLP, bert_hf_name_map, bert_inputs, f64, mlp_reference, randomize, tiny_bert
import peft_fixture

PEFT_CONFIG = {  # the fields PEFT's LoraConfig writes (peft_type, r, lora_alpha, target_modules, ...)
    "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "toy/mlp", "bias": "none",
    "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
    "layers_to_transform": None, "lora_alpha": 6, "lora_dropout": 0.05, "modules_to_save": None,
    "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": None, "target_modules": ["fc1", "0"],
    "task_type": None, "use_rslora": False,
}


def _write(directory, config, tensors):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "adapter_config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    save_file(tensors, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})


def _known_tensors():
    """fc1: r=2 (A [2, 6], B [5, 2]); blocks.0 (source name 'layers.0'): r=4 via rank_pattern."""
    a1 = (np.arange(12, dtype=np.float32).reshape(2, 6) - 5.5) / 10
    b1 = np.array([[1, 0], [0, 1], [1, 1], [-1, 2], [0.5, -0.5]], np.float32)
    a2 = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    b2 = np.linspace(1, -1, 16, dtype=np.float32).reshape(4, 4)
    return {"base_model.model.fc1.lora_A.weight": a1, "base_model.model.fc1.lora_B.weight": b1,
            "base_model.model.layers.0.lora_A.weight": a2, "base_model.model.layers.0.lora_B.weight": b2}


def test_hand_written_adapter_imports_with_patterns(pynative, tmp_path):
    tensors = _known_tensors()
    config = dict(PEFT_CONFIG, rank_pattern={"layers.0": 4}, alpha_pattern={"layers.0": 2})
    _write(str(tmp_path), config, tensors)
    net = MLP()
    base = {n: f64(p) for n, p in net.parameters_and_names()}
    x = np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)

    report = mindpet.import_peft(net, str(tmp_path), name_map={"blocks.0": "layers.0"})

    assert report.ok and report.loaded_modules == ["blocks.0", "fc1"] and report.injected_modules == ["blocks.0", "fc1"]
    assert isinstance(net.fc1, LoRADense) and net.fc1.lora_rank == 2 and net.fc1.scaling == 3.0
    assert net.blocks[0].lora_rank == 4 and net.blocks[0].scaling == 0.5 and net.fc1.lora_dropout_p == 0.05
    np.testing.assert_array_equal(net.fc1.mindpet_delta_lora_a.asnumpy(), tensors["base_model.model.fc1.lora_A.weight"])
    np.testing.assert_array_equal(net.blocks[0].mindpet_delta_lora_b.asnumpy(),
                                  tensors["base_model.model.layers.0.lora_B.weight"])
    lora = {"fc1": (3.0, tensors["base_model.model.fc1.lora_A.weight"].astype(np.float64),
                    tensors["base_model.model.fc1.lora_B.weight"].astype(np.float64)),
            "blocks.0": (0.5, tensors["base_model.model.layers.0.lora_A.weight"].astype(np.float64),
                         tensors["base_model.model.layers.0.lora_B.weight"].astype(np.float64))}
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), mlp_reference(x, base, lora), rtol=1e-5, atol=1e-5)

    # Export gives back the hand-written adapter (fc1 keeps its ReLU after the update, as in PEFT).
    mindpet.export_peft(net, str(tmp_path / "out"), name_map={"blocks.0": "layers.0"})
    exported = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert sorted(exported) == sorted(tensors) and all(np.array_equal(exported[k], v) for k, v in tensors.items())
    with open(tmp_path / "out" / "adapter_config.json", encoding="utf-8") as handle:
        out = json.load(handle)
    assert (out["r"], out["lora_alpha"], out["lora_dropout"]) == (2, 6, 0.05)
    assert out["rank_pattern"] == {"layers.0": 4} and out["alpha_pattern"] == {"layers.0": 2}
    assert out["target_modules"] == ["fc1", "layers.0"]

    # Into layers that already are LoRADense of the same rank and scale: loaded, nothing injected.
    again = mindpet.import_peft(net, str(tmp_path), name_map={"blocks.0": "layers.0"})
    assert again.injected_modules == [] and again.loaded_modules == ["blocks.0", "fc1"]


@pytest.mark.parametrize("numpy_bf16", [True, False], ids=["safetensors", "fallback-reader"])
def test_rslora_bfloat16_and_float16_files(pynative, tmp_path, monkeypatch, numpy_bf16):
    a = (np.arange(24, dtype=np.float32).reshape(4, 6) - 12) / 4  # exact in bfloat16 and float16
    b = (np.arange(20, dtype=np.float32).reshape(5, 4) - 10) / 2
    bf16 = lambda arr: (arr.view(np.uint32) >> 16).astype("<u2")  # noqa: E731  (exact for these values)
    header = {"base_model.model.fc1.lora_A.weight": {"dtype": "BF16", "shape": [4, 6], "data_offsets": [0, 48]},
              "base_model.model.fc1.lora_B.weight": {"dtype": "F16", "shape": [5, 4], "data_offsets": [48, 88]}}
    blob = json.dumps(header).encode()
    with open(tmp_path / "adapter_model.safetensors", "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob + bf16(a).tobytes() + b.astype("<f2").tobytes())
    with open(tmp_path / "adapter_config.json", "w", encoding="utf-8") as handle:
        json.dump(dict(PEFT_CONFIG, r=4, lora_alpha=4, use_rslora=True, target_modules=["fc1"]), handle)
    if not numpy_bf16:  # numpy without a bfloat16 dtype: safetensors.numpy cannot read the file
        def no_bf16(path):
            raise TypeError("data type 'bfloat16' not understood")
        monkeypatch.setattr(safetensors_reader, "load_file", no_bf16)
    net = MLP()
    mindpet.import_peft(net, str(tmp_path))
    assert net.fc1.lora_rank == 4 and net.fc1.scaling == pytest.approx(4 / math.sqrt(4))  # rsLoRA: 2, not 1
    np.testing.assert_array_equal(net.fc1.mindpet_delta_lora_a.asnumpy(), a)
    np.testing.assert_array_equal(net.fc1.mindpet_delta_lora_b.asnumpy(), b)


def test_bert_round_trip_with_hf_names(pynative, tmp_path):
    src = tiny_bert()
    mindpet.inject(src, "lora", ["*query", "*value"], lora_rank=2, lora_alpha=4)
    mindpet.inject(src, "lora", "*ffn.output", lora_rank=3, lora_alpha=4)
    randomize(src, "mindpet_delta_lora_", seed=4)
    inputs = bert_inputs()
    expected = src(*inputs).asnumpy()
    name_map = bert_hf_name_map()

    mindpet.export_peft(src, str(tmp_path), name_map=name_map, base_model_name_or_path="all-MiniLM-L6-v2")
    with open(tmp_path / "adapter_config.json", encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 4
    assert config["bias"] == "none" and config["fan_in_fan_out"] is False and config["task_type"] is None
    assert config["inference_mode"] is True and config["base_model_name_or_path"] == "all-MiniLM-L6-v2"
    assert config["rank_pattern"] == {"encoder.layer.0.output.dense": 3, "encoder.layer.1.output.dense": 3}
    assert config["alpha_pattern"] == {}
    assert "encoder.layer.1.attention.self.value" in config["target_modules"] and len(config["target_modules"]) == 6
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert len(tensors) == 12 and all(t.dtype == np.float32 for t in tensors.values())
    key = "base_model.model.encoder.layer.1.attention.self.query.lora_"
    query = src.bert.layers[1].attention.query
    np.testing.assert_array_equal(tensors[key + "A.weight"], query.mindpet_delta_lora_a.asnumpy())
    np.testing.assert_array_equal(tensors[key + "B.weight"], query.mindpet_delta_lora_b.asnumpy())
    assert tensors["base_model.model.encoder.layer.0.output.dense.lora_B.weight"].shape == (16, 3)

    dst = tiny_bert()  # same base weights, plain Dense everywhere
    base = {n: p for n, p in src.parameters_and_names()}
    for name, param in dst.parameters_and_names():
        param.set_data(base[name].value().copy())
    report = mindpet.import_peft(dst, str(tmp_path), name_map=name_map.__getitem__)  # KeyError: unmapped path
    assert report.ok and len(report.injected_modules) == 6
    np.testing.assert_array_equal(dst(*inputs).asnumpy(), expected)


def test_adapter_saved_by_peft_reproduces_the_pytorch_output(mode):
    """A directory written by peft's save_pretrained (tiny BertModel, LoRA on query, value and every
    output.dense, rank/alpha pattern on one module) imported into the MindSpore port: same hidden states."""
    net = BertEncoder(TINY)
    net.set_train(False)
    state = convert_hf_state(peft_fixture.base_state(), prefix="")
    for name, param in net.parameters_and_names():
        param.set_data(Tensor(state[name]))
    ids = Tensor(peft_fixture.input_ids().astype(np.int32))
    ones, zeros = Tensor(np.ones(ids.shape, np.int32)), Tensor(np.zeros(ids.shape, np.int32))
    expected = np.load(os.path.join(peft_fixture.DATA, "expected.npy"))
    assert np.abs(net(ids, ones, zeros).asnumpy() - expected).max() > 0.1  # the adapter matters

    report = mindpet.import_peft(net, peft_fixture.DATA, name_map=bert_hf_name_map(prefix=""))

    assert report.ok and len(report.injected_modules) == 8
    value = net.layers[1].attention.value
    assert (value.lora_rank, value.scaling) == (3, 3.0) and net.layers[0].ffn.output.scaling == 2.0
    np.testing.assert_allclose(net(ids, ones, zeros).asnumpy(), expected, rtol=0, atol=2e-5)


def test_export_reproduces_the_peft_file(pynative, tmp_path):
    net = BertEncoder(TINY)
    mindpet.import_peft(net, peft_fixture.DATA, name_map=bert_hf_name_map(prefix=""))
    mindpet.export_peft(net, str(tmp_path), name_map=bert_hf_name_map(prefix=""))
    original = load_file(os.path.join(peft_fixture.DATA, "adapter_model.safetensors"))
    exported = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sorted(exported) == sorted(original)
    assert all(np.array_equal(exported[k], v) for k, v in original.items())
    configs = []
    for directory in (peft_fixture.DATA, str(tmp_path)):
        with open(os.path.join(directory, "adapter_config.json"), encoding="utf-8") as handle:
            configs.append(json.load(handle))
    for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "rank_pattern", "alpha_pattern", "bias",
                "fan_in_fan_out", "use_rslora", "use_dora", "inference_mode"):
        assert configs[1][key] == configs[0][key], key


def test_strict_reports_and_mismatches(pynative, tmp_path):
    tensors = _known_tensors()
    tensors["base_model.model.classifier.weight"] = np.zeros((3, 4), np.float32)
    _write(str(tmp_path), dict(PEFT_CONFIG, rank_pattern={"layers.0": 4}), tensors)
    net = MLP()
    mindpet.inject(net, "lora", "head", lora_rank=2, lora_alpha=2)
    mindpet.inject(net, "lora", "fc1", lora_rank=2, lora_alpha=2)  # scaling 1, file says 3
    with pytest.raises(ValueError) as info:
        mindpet.import_peft(net, str(tmp_path))
    message = str(info.value)
    for word in ("base_model.model.classifier.weight", "base_model.model.layers.0.lora_A.weight",
                 "base_model.model.head.lora_A.weight", "fc1 (fc1): scaling 3 in the file"):
        assert word in message
    assert isinstance(net.blocks[0], nn.Dense)  # nothing changed

    report = mindpet.import_peft(net, str(tmp_path), name_map={"blocks.0": "layers.0"}, strict=False)
    assert report.loaded_modules == ["blocks.0"] and report.injected_modules == ["blocks.0"]
    assert report.unexpected_keys == ["base_model.model.classifier.weight"]
    assert report.missing_keys == ["base_model.model.head.lora_A.weight", "base_model.model.head.lora_B.weight"]
    assert len(report.mismatches) == 1 and report.mismatches[0].startswith("fc1")


@pytest.mark.parametrize("change, error, words", [
    ({"peft_type": "PREFIX_TUNING"}, ValueError, ["only 'LORA'"]),
    ({"bias": "all"}, ValueError, ["bias='all'"]),
    ({"use_dora": True}, ValueError, ["use_dora"]),
    ({"r": 0}, ValueError, ["'r'"]),
    ({"lora_alpha": "16"}, ValueError, ["'lora_alpha'"]),
])
def test_unsupported_configs(pynative, tmp_path, change, error, words):
    _write(str(tmp_path), dict(PEFT_CONFIG, **change), _known_tensors())
    with pytest.raises(error) as info:
        mindpet.import_peft(MLP(), str(tmp_path), name_map={"blocks.0": "layers.0"})
    assert all(w in str(info.value) for w in words)


def test_export_errors(pynative, tmp_path):
    with pytest.raises(ValueError, match="no LoRADense"):
        mindpet.export_peft(MLP(), str(tmp_path))
    net = MLP()
    mindpet.inject(net, "lora", ["blocks.0", "head"], lora_rank=2, lora_alpha=2)
    with pytest.raises(ValueError, match="maps both 'blocks.0' and 'head' to 'x'"):
        mindpet.export_peft(net, str(tmp_path), name_map=lambda path: "x")
    with pytest.raises(TypeError, match="'name_map'"):
        mindpet.export_peft(net, str(tmp_path), name_map=["head"])
    with pytest.raises(TypeError, match="'name_map' returned None"):
        mindpet.export_peft(net, str(tmp_path), name_map=lambda path: None)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        mindpet.import_peft(net, str(tmp_path / "none"))
    assert not os.listdir(tmp_path)  # no half-written export


def _header_metadata(path):
    """The safetensors header's __metadata__, parsed by hand (independently of mindpet's reader)."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size)).get("__metadata__")


def _lora_mlp(alpha=4, seed=4):
    net = MLP()
    mindpet.inject(net, "lora", ["fc1", "blocks.0"], lora_rank=2, lora_alpha=alpha)
    randomize(net, "mindpet_delta_lora_", seed=seed)
    return net


def test_export_ties_config_and_weights_by_sha256(pynative, tmp_path):
    src, other = str(tmp_path / "src"), str(tmp_path / "other")
    mindpet.export_peft(_lora_mlp(), src)
    mindpet.export_peft(_lora_mlp(alpha=8, seed=5), other)
    weights, config = os.path.join(src, "adapter_model.safetensors"), os.path.join(src, "adapter_config.json")

    # PEFT-loadable by construction: str -> str metadata with PEFT's "format": "pt", plus the two records
    meta = _header_metadata(weights)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert sorted(meta) == ["format", "mindpet_config_sha256", "mindpet_tensors_sha256"] and meta["format"] == "pt"
    with open(config, "rb") as handle:
        assert meta["mindpet_config_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    tensors = load_file(weights)
    assert meta["mindpet_tensors_sha256"] == tensors_sha256(tensors)
    with open(config, encoding="utf-8") as handle:
        assert not [k for k in json.load(handle) if "mindpet" in k]  # the PEFT config is untouched

    def refused(directory, file_name):
        net = MLP()
        with pytest.raises(ValueError, match=f"{file_name}.*SHA-256|{file_name}.*mindpet_tensors_sha256"):
            mindpet.import_peft(net, directory)
        assert isinstance(net.fc1, nn.Dense) and not isinstance(net.fc1, LoRADense)  # nothing changed

    assert mindpet.import_peft(MLP(), src).ok
    # the config of another export next to these weights
    mixed = str(tmp_path / "mixed")
    shutil.copytree(src, mixed)
    shutil.copy(os.path.join(other, "adapter_config.json"), mixed)
    refused(mixed, "adapter_config.json")
    # the weights of another export next to this config
    shutil.copy(os.path.join(other, "adapter_model.safetensors"), mixed)
    shutil.copy(config, mixed)
    refused(mixed, "adapter_config.json")
    # a tensor changed after export (header kept)
    changed = dict(tensors)
    changed["base_model.model.fc1.lora_B.weight"] = changed["base_model.model.fc1.lora_B.weight"] + 1
    save_file(changed, os.path.join(mixed, "adapter_model.safetensors"), metadata=meta)
    refused(mixed, "adapter_model.safetensors")


def test_files_without_the_records_still_import(pynative, tmp_path):
    """Files as PEFT writes them (metadata {"format": "pt"} only) are not checked: they import."""
    assert _header_metadata(os.path.join(peft_fixture.DATA, "adapter_model.safetensors")) == {"format": "pt"}
    src = str(tmp_path / "src")
    net = _lora_mlp()
    x = Tensor(np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32))
    expected = net(x).asnumpy()
    mindpet.export_peft(net, src)
    tensors = load_file(os.path.join(src, "adapter_model.safetensors"))
    save_file(tensors, os.path.join(src, "adapter_model.safetensors"), metadata={"format": "pt"})  # as PEFT saves
    with open(os.path.join(src, "adapter_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    with open(os.path.join(src, "adapter_config.json"), "w", encoding="utf-8") as handle:
        json.dump(dict(config, base_model_name_or_path="edited"), handle)  # edited: no record, no check
    fresh = MLP()
    assert mindpet.import_peft(fresh, src).ok
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)
