"""A truncated, corrupt or empty checkpoint gives a ValueError naming the file, never a partial load."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.graph import load_pretrained_and_delta


class _Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.weight = Parameter(Tensor(np.arange(4096, dtype=np.float32).reshape(64, 64)), name="weight")
        self.mindpet_delta_lora_a = Parameter(Tensor(np.ones((2, 64), np.float32)), name="mindpet_delta_lora_a")

    def construct(self, x):
        return x


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "garbage":
        return bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8))
    return b""  # empty


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("arg", ["pretrained_ckpt", "delta_ckpt"])
def test_damaged_file_is_a_value_error_naming_it(tmp_path, fmt, how, arg):
    good = tmp_path / f"good.{fmt}"
    ms.save_checkpoint(_Net(), str(good), format=fmt)
    bad = tmp_path / f"bad_{how}.{fmt}"
    bad.write_bytes(_damage(good.read_bytes(), how))
    net = _Net()
    net.weight.set_data(Tensor(np.zeros((64, 64), np.float32)))
    paths = {"pretrained_ckpt": str(good), "delta_ckpt": str(good), arg: str(bad)}
    with pytest.raises(ValueError) as info:
        load_pretrained_and_delta(net, paths["pretrained_ckpt"], paths["delta_ckpt"])
    message = str(info.value)
    assert str(bad) in message and arg in message
    assert not net.weight.asnumpy().any(), "a damaged file must not load anything"


def test_intact_file_still_loads(tmp_path):
    path = tmp_path / "good.ckpt"
    ms.save_checkpoint(_Net(), str(path))
    net = _Net()
    net.weight.set_data(Tensor(np.zeros((64, 64), np.float32)))
    assert load_pretrained_and_delta(net, str(path), str(path)).ok
    np.testing.assert_array_equal(net.weight.asnumpy(), np.arange(4096, dtype=np.float32).reshape(64, 64))
