"""An error raised by a mindpet layer inside an eager (PYNATIVE) training step leaves the process usable.

MindSpore 2.10 records the autodiff graph while a PYNATIVE forward runs under GradOperation; an exception
escaping it leaves that recording half-built and a later, unrelated training step fails ("For
LayerNormGrad, the index 7 is out of range of input num 7"). Every mindpet Cell derives from
``mindpet._eager.GradSafeCell``, which clears the recording when its eager call raises.
"""
import importlib
import inspect
import pkgutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from eager_recovery import assert_an_unrelated_pynative_step_trains
from mindpet._eager import GradSafeCell
from mindpet.delta import AdapterLayer, LoRADense, LowRankAdapterLayer, PromptTuning, RDropLoss
from mindpet.kernels.norm import LayerNorm


class _Wrap(nn.Cell):
    """Loss = sum of ``layer(x)`` (or ``layer(x, labels)`` for a loss layer), behind a LayerNorm."""

    def __init__(self, layer, norm_width, takes_labels=False):
        super().__init__()
        self.norm = nn.LayerNorm((norm_width,)) if norm_width else None
        self.layer = layer
        self.takes_labels = takes_labels

    def construct(self, x, labels):
        if self.norm is not None:
            x = self.norm(x)
        if self.takes_labels:
            return self.layer(x, labels)
        return self.layer(x).astype(ms.float32).sum()


def _labels(values):
    return Tensor(np.array(values, np.int32))


# (id, layer factory, norm width, bad x, labels, expected error, message fragment)
_CASES = [
    ("lora_last_dim", lambda: LoRADense(8, 4, lora_rank=2, lora_alpha=4, lora_dropout=0.0), 7,
     np.ones((3, 7), np.float32), None, ValueError, "'in_channels'"),
    ("adapter_last_dim", lambda: AdapterLayer(8, 4, compute_dtype=ms.float32), 6,
     np.ones((3, 6), np.float32), None, ValueError, "'hidden_size'"),
    ("low_rank_adapter_last_dim", lambda: LowRankAdapterLayer(8, 2, compute_dtype=ms.float32), 5,
     np.ones((3, 5), np.float32), None, ValueError, "'hidden_size'"),
    ("prompt_ids_range", lambda: PromptTuning(4, 8), 0,
     np.array([[0, 1, 9, 2]], np.int32), None, ValueError, "'prompt_ids'"),
    ("rdrop_labels_range", RDropLoss, 3,
     np.ones((4, 3), np.float32), [0, 1, 0, 5], ValueError, "'label_ids'"),
    ("layer_norm_shape", lambda: LayerNorm(8), 6,
     np.ones((3, 6), np.float32), None, Exception, None),
]


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_training_still_works_after_a_layer_raised_in_a_pynative_step(pynative, case):
    _, make_layer, width, bad_x, labels, error, fragment = case
    net = _Wrap(make_layer(), width, takes_labels=labels is not None)
    params = net.trainable_params()
    step = nn.TrainOneStepCell(net, nn.SGD(params, learning_rate=0.1))
    step.set_train()
    label_tensor = _labels(labels if labels is not None else [0])
    with pytest.raises(error, match=fragment):
        step(Tensor(bad_x), label_tensor)
    assert_an_unrelated_pynative_step_trains()


def test_the_hazard_is_real_for_a_plain_cell():
    """Control, in a fresh process: the same raise from a plain nn.Cell does break the next step, so the
    test above can fail. If a MindSpore upgrade fixes this, GradSafeCell can go."""
    script = textwrap.dedent("""
        import numpy as np, mindspore as ms
        from mindspore import nn, Tensor
        ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
        class Raising(nn.Cell):
            def __init__(self):
                super().__init__()
                self.norm = nn.LayerNorm((4,))
            def construct(self, x):
                y = self.norm(x)
                raise ValueError("bad input")
        class NormNet(nn.Cell):
            def __init__(self):
                super().__init__()
                self.dense = nn.Dense(4, 4); self.norm = nn.LayerNorm((4,))
            def construct(self, x):
                return self.norm(self.dense(x)).sum()
        bad = Raising()
        step = nn.TrainOneStepCell(bad, nn.SGD(bad.trainable_params(), learning_rate=0.1)); step.set_train()
        try:
            step(Tensor(np.ones((3, 4), np.float32)))
        except ValueError:
            pass
        good = NormNet()
        s2 = nn.TrainOneStepCell(good, nn.SGD(good.trainable_params(), learning_rate=0.1)); s2.set_train()
        try:
            s2(Tensor(np.ones((3, 4), np.float32))).asnumpy()
        except Exception as exc:
            print("BROKEN", type(exc).__name__)
        else:
            print("FINE")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "BROKEN" in out.stdout, out.stdout + out.stderr[-2000:]


def _package_cell_classes():
    classes = {}
    for info in pkgutil.walk_packages(mindpet.__path__, "mindpet."):
        if ".examples" in info.name:
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, nn.Cell) and cls.__module__ == module.__name__:
                classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return classes


def test_every_package_cell_is_grad_safe():
    classes = _package_cell_classes()
    assert "mindpet.delta.lora.LoRADense" in classes and len(classes) >= 10
    unsafe = sorted(name for name, cls in classes.items() if not issubclass(cls, GradSafeCell))
    assert not unsafe, f"nn.Cell subclasses not deriving from GradSafeCell: {unsafe}"
