"""After an error escaped an eager (PYNATIVE) training step: check that an unrelated training step still
trains (shared by the eager-error tests of tests/reliability and the R-Drop tests).

MindSpore 2.10 once failed such a step with "For LayerNormGrad, the index 7 is out of range of input num
7", hence a LayerNorm in the network. A module beside the root conftest, so ``tests/`` is on ``sys.path``.
"""
import numpy as np
from mindspore import Tensor, nn


class NormNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4, 4)
        self.norm = nn.LayerNorm((4,))

    def construct(self, x):
        return self.norm(self.dense(x))[:, 0].sum()


def assert_an_unrelated_pynative_step_trains() -> None:
    net = NormNet()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    step.set_train()
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    before = net.dense.weight.asnumpy().copy()
    assert np.isfinite(float(step(x).asnumpy()))
    assert np.abs(net.dense.weight.asnumpy() - before).max() > 1e-4  # the step really updated
