"""mindpet.quant.storage: bit-exact save/load round trip, the quantized_tensors() hook, atomic writes,
and clear errors on corrupt or inconsistent files."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from mindpet.quant import FORMATS, QuantizedTensor, quantize
from mindpet.quant.storage import load_quantized, save_quantized


def _tensors():
    rng = np.random.default_rng(0)
    out = {f"layers.{i}.{fmt}.weight": quantize(rng.standard_normal((6, 128)).astype(np.float32), fmt)
           for i, fmt in enumerate(FORMATS)}
    out["norm.weight"] = rng.standard_normal(128).astype(np.float32)
    out["embed.weight"] = rng.standard_normal((10, 4)).astype(np.float16)
    return out


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if isinstance(value, QuantizedTensor):
            g = got[name]
            assert isinstance(g, QuantizedTensor) and g.format == value.format and g.shape == value.shape
            for field in ("codes", "scales", "offsets"):
                a, b = getattr(g, field), getattr(value, field)
                assert (a is None) == (b is None)
                if b is not None:
                    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        else:
            assert got[name].dtype == value.dtype and got[name].tobytes() == value.tobytes()


def _header(path):
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size)), size


def _rewrite_header(path, header, size):
    """Replace the JSON header in place (padded with spaces to the same length, as safetensors allows)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= size
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(text + b" " * (size - len(text)))


def test_round_trip_is_bit_exact(tmp_path):
    tensors = _tensors()
    path = save_quantized(tensors, tmp_path / "base.safetensors")
    assert path == str(tmp_path / "base.safetensors")
    _assert_same(load_quantized(path), tensors)
    meta = _header(path)[0]["__metadata__"]
    records = json.loads(meta["tensors"])
    assert meta["mindpet.quant"] == "1"
    assert records["layers.1.nf4.weight"] == {"format": "nf4", "shape": [6, 128], "bits": 4, "group_size": 64,
                                              "has_offsets": False}
    assert records["layers.0.int8.weight"]["group_size"] == 128
    assert records["norm.weight"] == {"format": "array"}


def test_object_with_quantized_tensors_hook(tmp_path):
    tensors = _tensors()

    class Net:
        def quantized_tensors(self):
            return tensors
    path = save_quantized(Net(), str(tmp_path / "net.safetensors"))
    _assert_same(load_quantized(path), tensors)


def test_write_is_atomic(tmp_path, monkeypatch):
    import safetensors.numpy
    path = tmp_path / "base.safetensors"
    old = {"a.weight": np.ones((2, 2), np.float32)}
    save_quantized(old, path)

    def broken(arrays, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_quantized(_tensors(), path)
    _assert_same(load_quantized(path), old)  # the previous complete file is untouched
    with pytest.raises(OSError, match="disk full"):
        save_quantized(_tensors(), tmp_path / "new.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["base.safetensors"]  # no partial file, no scratch directory


@pytest.mark.parametrize("source, exc, match", [
    ([1, 2], TypeError, "'tensors_or_net' must be a dict"),
    ({}, ValueError, "no tensors to save"),
    ({1: np.ones(2, np.float32)}, TypeError, "every name must be a non-empty str"),
    ({"a": [1.0]}, TypeError, "tensor 'a' must be a QuantizedTensor or numpy.ndarray"),
    ({"a": np.array(["x"])}, TypeError, "array 'a' has dtype"),
])
def test_bad_input_is_rejected_before_writing(tmp_path, source, exc, match):
    path = tmp_path / "x.safetensors"
    with pytest.raises(exc, match=match):
        save_quantized(source, path)
    assert not path.exists()


def test_name_clash_is_rejected(tmp_path):
    q = quantize(np.ones((2, 32), np.float32), "q8_0")
    with pytest.raises(ValueError, match="'w.codes' is produced twice"):
        save_quantized({"w": q, "w.codes": np.ones(2, np.float32)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="'path'"):
        save_quantized({"w": q}, 3)


def _corrupted(tmp_path, edit):
    path = tmp_path / "base.safetensors"
    save_quantized(_tensors(), path)
    header, size = _header(path)
    edit(header)
    _rewrite_header(path, header, size)
    return path


def _edit_record(name, **changes):
    def edit(header):
        records = json.loads(header["__metadata__"]["tensors"])
        records[name].update(changes)
        header["__metadata__"]["tensors"] = json.dumps(records, separators=(",", ":"))
    return edit


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["__metadata__"].pop("mindpet.quant"), "has no 'mindpet.quant'"),
    (lambda h: h["__metadata__"].update(tensors="{not json"), "not JSON"),
    (_edit_record("layers.2.q4_0.weight", format="q4_1"), "'offsets'"),
    (_edit_record("layers.2.q4_0.weight", format="q9"), "'format' must be one of"),
    (_edit_record("layers.4.q8_0.weight", shape=[6, 64]), "'codes' of a 'q8_0' QuantizedTensor must be int8 \\[6, 64\\]"),
    (_edit_record("layers.1.nf4.weight", group_size=32), "records .*'group_size': 32.* means .*'group_size': 64"),
    (_edit_record("layers.0.int8.weight", bits=4), "'bits': 4"),
    (_edit_record("layers.3.q4_1.weight", shape=[6, 100]), "in_channels"),
])
def test_corrupt_or_inconsistent_file(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        load_quantized(_corrupted(tmp_path, edit))


def test_tensor_not_in_the_metadata(tmp_path):
    from safetensors.numpy import load_file, save_file
    path = save_quantized(_tensors(), tmp_path / "base.safetensors")
    arrays = load_file(path)
    arrays["extra"] = np.zeros(3, np.float32)
    save_file(arrays, path, metadata=_header(path)[0]["__metadata__"])
    with pytest.raises(ValueError, match=r"not described by the metadata: \['extra'\]"):
        load_quantized(path)
    del arrays["extra"], arrays["norm.weight"]
    save_file(arrays, path, metadata=_header(tmp_path / "base.safetensors")[0]["__metadata__"])
    with pytest.raises(ValueError, match=r"the array 'norm.weight' recorded in the metadata is missing"):
        load_quantized(path)


def test_corrupt_values_and_files(tmp_path):
    tensors = {"w": quantize(np.ones((2, 32), np.float32), "q4_0")}
    bad = QuantizedTensor("q4_0", (2, 32), tensors["w"].codes, np.full((2, 1), np.inf, np.float16))
    path = save_quantized({"w": bad}, tmp_path / "inf.safetensors")
    with pytest.raises(ValueError, match="'w' has non-finite scales"):
        load_quantized(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(ValueError, match="load_quantized"):
        load_quantized(garbage)
    truncated = tmp_path / "truncated.safetensors"
    data = open(save_quantized(_tensors(), tmp_path / "ok.safetensors"), "rb").read()
    truncated.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="safetensors cannot read it"):
        load_quantized(truncated)
    with pytest.raises(FileNotFoundError):
        load_quantized(tmp_path / "absent.safetensors")
