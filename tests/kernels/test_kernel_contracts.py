"""The Python contract table (mindpet.kernels.contracts) agrees with ops/include/mindpet/contracts.h,
as exported by mindpet._native.contracts, and serves the CPU and the Ascend backend alike."""
import inspect

import pytest

from mindpet import _native
from mindpet.kernels import activations, ascend, contracts


def test_every_op_of_the_header_is_in_the_table_and_back():
    assert sorted(contracts.OPS) == sorted(_native.contracts.OPS)


@pytest.mark.parametrize("name", sorted(contracts.OPS))
def test_symbol_and_counts_agree_with_the_header(name):
    native = _native.contracts.OPS[name]
    op = contracts.OPS[name]
    assert op.cpu_symbol == native["symbol"]
    assert op.num_inputs == native["num_inputs"]
    assert op.num_outputs == native["num_outputs"]
    # the shape function takes every input and gives every output
    params = [p for p in inspect.signature(op.shapes).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert len(params) <= op.num_inputs
    assert len(op.out_shapes(*([[2, 3]] * op.num_inputs))) == op.num_outputs
    assert all(0 <= i < op.num_outputs for i in op.float32_outputs)


def test_activation_codes_agree_with_the_header():
    assert contracts.ACTIVATION_CODES == dict(_native.contracts.ACTIVATION_CODES)
    assert len(contracts.ACTIVATION_CODES) == _native.contracts.NUM_ACTIVATIONS
    assert activations.ACTIVATION_CODES is contracts.ACTIVATION_CODES


def test_ascend_backend_reads_the_same_table():
    assert ascend.OP_TYPES == {n: op.ascend_op_type for n, op in contracts.OPS.items() if op.ascend_op_type}
    assert set(contracts.CPU_ONLY_OPS) == {"activation", "layer_norm", "quant_lora_linear", "attention", "rms_norm",
                                           "swiglu", "dropout_mask"}
    for name in ascend.OP_TYPES:
        shapes = [[4, 4]] * contracts.OPS[name].num_inputs
        assert ascend.out_shape(name, *shapes) == contracts.OPS[name].out_shapes(*shapes)
        assert len(ascend.out_dtype(name, "f32")) == contracts.OPS[name].num_outputs


def test_unknown_op_is_rejected_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown fused op 'nope'"):
        contracts.contract("nope")
