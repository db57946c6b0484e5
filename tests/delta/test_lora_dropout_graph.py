"""LoRA dropout from the generator in a compiled GRAPH training step keeps no mask: the fused CPU kernels take
the mask's key and generate it, so the graph has no more float ``[M, K]`` tensors (node outputs) with dropout
than without; the Dropout-primitive source (the scan's control) adds its masks, and the scan finds them."""
from __future__ import annotations

import re

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from mindpet.delta.lora import LoRADense
from mindpet.kernels import backend as kbackend

M, K, LAYERS = 13, 88, 3  # a shape no parameter of the test has


class _Stack(nn.Cell):
    def __init__(self, p, primitive_masks):
        super().__init__()
        self.layers = nn.CellList([LoRADense(K, K, 4, 8, p, compute_dtype=ms.float32, backend="fused")
                                   for _ in range(LAYERS)])
        for layer in self.layers:
            layer.weight.requires_grad = False
            if primitive_masks:  # the control: the layer's Dropout primitive draws [M, K] masks
                layer._generator_masks = False  # pylint: disable=protected-access
        assert self.layers[0].dropout_mask_source == ("primitive" if primitive_masks else "generator")

    def construct(self, x):
        for layer in self.layers:
            x = layer(x)
        return (x ** 2).mean()


def _mk_float_outputs(tmp_path, p, primitive_masks=False) -> int:
    """How many nodes of the compiled training step output a float [M, K] tensor."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs=1, save_graphs_path=str(tmp_path))
    try:
        net = _Stack(p, primitive_masks)
        net.set_train(True)
        step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), 0.1))
        step(Tensor(np.random.default_rng(1).standard_normal((M, K)).astype(np.float32))).asnumpy()
    finally:
        ms.set_context(save_graphs=0)
    files = sorted(tmp_path.rglob("graph_build_*.ir"))
    assert files, "MindSpore wrote no compiled graph"
    ir = "\n".join(f.read_text(errors="replace") for f in files)
    pattern = re.compile(r"->.*Tensor\[Float(?:16|32|64)\], \(%d, %d\)" % (M, K))
    return sum(1 for line in ir.splitlines() if "->" in line and pattern.search(line))


@pytest.mark.skipif(kbackend.fused_implementation("CPU")[0] != "cpu", reason="mindpet CPU kernel library not built")
def test_generator_dropout_adds_no_mask_tensor_to_the_training_graph(tmp_path):
    without = _mk_float_outputs(tmp_path / "p0", 0.0)
    with_key = _mk_float_outputs(tmp_path / "key", 0.2)
    with_masks = _mk_float_outputs(tmp_path / "primitive", 0.2, primitive_masks=True)
    assert with_key == without, (with_key, without)
    assert with_masks >= without + LAYERS, (with_masks, without)  # the control: the scan sees masks
