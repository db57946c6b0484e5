"""mindpet.quant.gguf: GGUF blocks straight into QuantizedTensor, checked against the ``gguf`` package's own
dequantiser on a synthetic file (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, F16, F32, an unsupported Q6_K) and on the real
SmolLM2 file (Q4_1 blocks, the Q8_0 token embedding, and that table re-encoded to Q5_0/Q5_1 by the gguf
package); no float32 copy while reading; the Q/K row permutation."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from benchmarks.models import gguf_loader
from mindpet.quant import QuantizedTensor, dequantize, quantize
from mindpet.quant.gguf import llama_qk_unpermutation, read_gguf_quantized, unpermute_qk

SHAPES = {"q40.weight": (12, 96), "q41.weight": (8, 64), "q80.weight": (5, 128), "q50.weight": (10, 96),
          "q51.weight": (6, 64)}
SHAPE_FORMATS = ["q4_0", "q4_1", "q8_0", "q5_0", "q5_1"]


def _gguf_types():
    from gguf import GGMLQuantizationType as T
    return {"q40.weight": T.Q4_0, "q41.weight": T.Q4_1, "q80.weight": T.Q8_0, "q50.weight": T.Q5_0,
            "q51.weight": T.Q5_1}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small GGUF with one tensor of each supported type plus a Q6_K one; returns (path, float weights)."""
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFWriter
    from gguf.quants import quantize as gguf_quantize
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    weights = {}
    for name, qtype in _gguf_types().items():
        w = (rng.standard_normal(SHAPES[name]) * 0.3).astype(np.float32)
        weights[name] = w
        writer.add_tensor(name, gguf_quantize(w, qtype), raw_dtype=qtype)
    weights["norm.weight"] = rng.standard_normal(24).astype(np.float32)
    writer.add_tensor("norm.weight", weights["norm.weight"])
    weights["half.weight"] = rng.standard_normal((3, 8)).astype(np.float16)
    writer.add_tensor("half.weight", weights["half.weight"])
    writer.add_tensor("k6.weight", rng.integers(0, 256, size=(2, 210), dtype=np.uint8), raw_dtype=T.Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, weights


def _reference(reader, name):
    """The gguf package's float32 dequantisation of one tensor, shaped (N, K)."""
    from gguf.quants import dequantize as gguf_dequantize
    tensor = next(t for t in reader.tensors if t.name == name)
    return gguf_dequantize(tensor.data, tensor.tensor_type).reshape(tuple(int(d) for d in reversed(tensor.shape)))


def test_synthetic_blocks_match_the_gguf_dequantiser(synthetic):
    from gguf import GGUFReader
    path, weights = synthetic
    reader = GGUFReader(str(path))
    out = read_gguf_quantized(reader, names=list(SHAPES) + ["norm.weight", "half.weight"])
    for name, fmt in zip(SHAPES, SHAPE_FORMATS):
        q = out[name]
        assert isinstance(q, QuantizedTensor) and q.format == fmt and q.shape == SHAPES[name]
        np.testing.assert_array_equal(dequantize(q), _reference(reader, name))
        # mindpet's quantiser gives the same blocks as the file (codes in our nibble order, d/m bit-exact)
        ours = quantize(weights[name], fmt)
        np.testing.assert_array_equal(q.codes, ours.codes)
        np.testing.assert_array_equal(q.scales.view(np.uint16), ours.scales.view(np.uint16))
        if q.offsets is not None:
            np.testing.assert_array_equal(q.offsets.view(np.uint16), ours.offsets.view(np.uint16))
    assert out["norm.weight"].dtype == np.float32 and np.array_equal(out["norm.weight"], weights["norm.weight"])
    assert out["half.weight"].dtype == np.float16 and np.array_equal(out["half.weight"], weights["half.weight"])


def test_unsupported_type_names_tensor_and_type(synthetic):
    path, _ = synthetic
    with pytest.raises(ValueError, match=r"'k6.weight' has type Q6_K, which is not supported"):
        read_gguf_quantized(path)
    with pytest.raises(ValueError, match=r"'names' are not tensors of the file: \['nope'\]"):
        read_gguf_quantized(path, names=["nope"])
    with pytest.raises(FileNotFoundError):
        read_gguf_quantized(path.parent / "absent.gguf")
    with pytest.raises(TypeError, match="'path_or_reader'"):
        read_gguf_quantized(3)
    with pytest.raises(ValueError, match="'format'"):
        read_gguf_quantized(path, names=["q40.weight"], format="q3")


def test_reencoding_per_tensor(synthetic):
    path, _ = synthetic
    from gguf import GGUFReader
    reader = GGUFReader(str(path))
    out = read_gguf_quantized(reader, names=["q41.weight", "norm.weight"], format="q8_0")
    q8 = out["q41.weight"]
    assert q8.format == "q8_0" and out["norm.weight"].dtype == np.float32
    # q8_0 of the Q4_1 weight: Q4_1's error is kept, q8_0 adds at most half a step
    q41 = _reference(reader, "q41.weight")
    step = np.repeat(q8.scales.astype(np.float64), 32, axis=1)
    assert np.all(np.abs(dequantize(q8, np.float64) - q41) <= step * 0.53)


def test_qk_unpermutation_matches_the_benchmark_loader():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 64)).astype(np.float32)
    for heads in (1, 3, 4):
        index = llama_qk_unpermutation(24, heads)
        np.testing.assert_array_equal(w[index], gguf_loader.unpermute_rows(w, heads))
        q = quantize(w, "q4_1")
        np.testing.assert_array_equal(dequantize(q.take_rows(index)), gguf_loader.unpermute_rows(dequantize(q), heads))
    tensors = {"blk.0.attn_q.weight": quantize(w, "q8_0"), "blk.0.attn_k.weight": w[:12],
               "blk.0.attn_v.weight": w[:12]}
    out = unpermute_qk(tensors, num_heads=4, num_kv_heads=2)
    np.testing.assert_array_equal(dequantize(out["blk.0.attn_q.weight"]),
                                  gguf_loader.unpermute_rows(dequantize(tensors["blk.0.attn_q.weight"]), 4))
    np.testing.assert_array_equal(out["blk.0.attn_k.weight"], gguf_loader.unpermute_rows(w[:12], 2))
    assert out["blk.0.attn_v.weight"] is tensors["blk.0.attn_v.weight"]
    with pytest.raises(ValueError, match="out_channels"):
        llama_qk_unpermutation(24, 5)


# ------------------------------------------------------------------------ the real SmolLM2 file

@pytest.fixture(scope="module")
def smollm2_reader():
    reason = gguf_loader.missing_reason()
    if reason:
        pytest.skip(f"SmolLM2 GGUF test needs the offline packages: {reason}")
    from gguf import GGUFReader
    return GGUFReader(str(gguf_loader.smollm2_path()))


REAL = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
        "blk.29.ffn_gate.weight", "output_norm.weight"]


def test_real_tensors_match_the_gguf_dequantiser(smollm2_reader):
    out = read_gguf_quantized(smollm2_reader, names=REAL)
    assert out["token_embd.weight"].format == "q8_0" and out["token_embd.weight"].shape == (49152, 576)
    assert out["blk.0.ffn_down.weight"].format == "q4_1" and out["blk.0.ffn_down.weight"].shape == (576, 1536)
    for name in REAL:
        value = out[name]
        got = dequantize(value) if isinstance(value, QuantizedTensor) else value
        np.testing.assert_array_equal(got, _reference(smollm2_reader, name))


@pytest.mark.parametrize("name", ["token_embd.weight", "blk.0.ffn_down.weight", "blk.3.attn_k.weight"])
def test_reading_makes_no_float32_copy(smollm2_reader, name):
    tensor = next(t for t in smollm2_reader.tensors if t.name == name)
    float32_bytes = 4 * int(np.prod(tensor.shape))
    tracemalloc.start()
    try:
        q = read_gguf_quantized(smollm2_reader, names=[name])[name]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(q, QuantizedTensor)
    # the result (<= 8.5 bits/weight) plus one byte per weight of repacking scratch; float32 would be 32 bits
    assert peak < 0.6 * float32_bytes, (peak, float32_bytes)


def test_reencoding_the_whole_file_holds_one_tensor_in_float32_at_a_time(smollm2_reader):
    quantised = [t for t in smollm2_reader.tensors if t.tensor_type.name.startswith("Q")]
    float32_bytes = sum(4 * int(np.prod(t.shape)) for t in quantised)
    tracemalloc.start()
    try:
        out = read_gguf_quantized(smollm2_reader, format="q8_0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert {out[t.name].format for t in quantised} == {"q8_0"}
    # the q8_0 result is 8.5/32 of float32; the largest re-encoded (Q4_1) tensor adds < 1 %
    assert peak < 0.35 * float32_bytes, peak / float32_bytes


@pytest.mark.parametrize("fmt", ["q5_0", "q5_1"])
def test_real_embedding_in_5_bits_matches_the_gguf_package(smollm2_reader, fmt, tmp_path):
    """SmolLM2's token table (49152 x 576, Q8_0 in the file) re-encoded to 5 bits: mindpet's quantiser and the
    gguf package's give the same weights; the package's Q5 blocks written to a GGUF file load directly into
    the same QuantizedTensor (codes, d, m bit-exact), without a float32 copy of the table."""
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFReader, GGUFWriter
    from gguf.quants import dequantize as gguf_dequantize
    from gguf.quants import quantize as gguf_quantize
    qtype = {"q5_0": T.Q5_0, "q5_1": T.Q5_1}[fmt]
    table = _reference(smollm2_reader, "token_embd.weight")
    ours = quantize(table, fmt)
    blocks = gguf_quantize(table, qtype)
    np.testing.assert_array_equal(dequantize(ours), gguf_dequantize(blocks, qtype).reshape(table.shape))
    path = tmp_path / "table.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", blocks, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    del blocks, table
    reader = GGUFReader(str(path))
    tracemalloc.start()
    try:
        loaded = read_gguf_quantized(reader, names=["token_embd.weight"])["token_embd.weight"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.format == fmt and loaded.shape == (49152, 576)
    assert loaded.nbytes * 8 == {"q5_0": 5.5, "q5_1": 6.0}[fmt] * 49152 * 576
    np.testing.assert_array_equal(loaded.codes, ours.codes)
    np.testing.assert_array_equal(loaded.scales.view(np.uint16), ours.scales.view(np.uint16))
    if fmt == "q5_1":
        np.testing.assert_array_equal(loaded.offsets.view(np.uint16), ours.offsets.view(np.uint16))
    assert peak < 0.6 * 4 * 49152 * 576, peak / (4 * 49152 * 576)
