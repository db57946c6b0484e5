"""A quantised base in a compiled GRAPH training step: no node of the compiled graph outputs a float copy of a
quantised weight (the fused path), while the composed path does (so the scan can fail); checks of a call add no
nodes to the graph (compile-time ``constexpr``)."""
from __future__ import annotations

import re

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from mindpet.delta.lora import LoRADense
from mindpet.quant import QuantizedDense, quantize

from quant_testing import requires_fused

K, N = 160, 96  # shapes no activation of the test has (batch 3)


class _Net(nn.Cell):
    def __init__(self, backend):
        super().__init__()
        rng = np.random.default_rng(0)
        q1 = quantize(rng.standard_normal((N, K)).astype(np.float32) * 0.1, "q4_1")
        q2 = quantize(rng.standard_normal((K, N)).astype(np.float32) * 0.1, "q8_0")
        self.lora = LoRADense(K, N, 4, 8, 0.0, has_bias=False, compute_dtype=ms.float32, backend=backend,
                              base=QuantizedDense.from_quantized(q1, backend=backend))
        self.plain = QuantizedDense.from_quantized(q2, backend=backend)

    def construct(self, x):
        return (self.plain(self.lora(x)) ** 2).mean()


def _compiled_ir(tmp_path, backend) -> str:
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs=1, save_graphs_path=str(tmp_path))
    try:
        net = _Net(backend)
        step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), 0.1))
        step(Tensor(np.random.default_rng(1).standard_normal((3, K)).astype(np.float32))).asnumpy()
    finally:
        ms.set_context(save_graphs=0)
    files = sorted(tmp_path.rglob("graph_build_*.ir"))
    assert files, "MindSpore wrote no compiled graph"
    return "\n".join(f.read_text(errors="replace") for f in files)


def _float_weight_outputs(ir: str):
    """Node outputs (after '->') holding a float tensor of a weight's shape [N, K] / [K, N] (or transposed)."""
    shapes = r"\((?:%d, %d|%d, %d)\)" % (N, K, K, N)
    return [line for line in ir.splitlines()
            if "->" in line and re.search(r"->.*Tensor\[Float(?:16|32|64)\], " + shapes, line)]


@requires_fused
def test_fused_graph_holds_no_float_copy_of_the_quantised_weights(tmp_path):
    assert _float_weight_outputs(_compiled_ir(tmp_path, "fused")) == []


def test_composed_graph_dequantises_the_weights(tmp_path):
    """The scan's control: the composed path materialises deq(W) as a float tensor, and the scan finds it."""
    assert _float_weight_outputs(_compiled_ir(tmp_path, "composed"))


@requires_fused
def test_input_gradient_of_a_quantised_layer_keeps_no_input_alive(tmp_path):
    """The plain quantised layer's input gradient ``dx = dy deq(W)`` reads its K from a [1, K] constant stand-in,
    not from the forward's input: so the graph need not keep that input alive until the backward (``MatMul``'s
    ``dx = dy W`` keeps none either). Its dy comes first, then the stand-in."""
    ir = _compiled_ir(tmp_path, "fused")
    stand_in = re.compile(r"= Custom\(%\d+, Tensor\(shape=\[1, " + str(N) + r"\], dtype=Float32")
    assert len([line for line in ir.splitlines() if stand_in.search(line)]) == 1
