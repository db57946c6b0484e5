"""A lazily initialised Tensor as an init argument (issue 19: MindPet 1.0.4's own tests crashed the process).

``Tensor(shape=..., dtype=..., init=One())`` holds no data until ``init_data()``; MindSpore 2.10 segfaults
when it is cast. ``nn.Dense`` accepts such Tensors, and so does every Tensor-typed init argument of the
delta layers (materialised by ``mindpet.delta._parameters.new_parameter``).
"""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor
from mindspore.common import dtype as mstype
from mindspore.common.initializer import One

from mindpet.delta import AdapterDense, LoRADense, LowRankAdapterDense, PromptTuning

IN, OUT, RANK = 3, 4, 2
LAZY_CASES = [
    # (layer, init argument, shape of the parameter, build(init) -> the Parameter)
    ("LoRADense", "lora_a_init", (RANK, IN),
     lambda t: LoRADense(IN, OUT, RANK, 4, 0.0, lora_a_init=t).mindpet_delta_lora_a),
    ("LoRADense", "lora_b_init", (OUT, RANK),
     lambda t: LoRADense(IN, OUT, RANK, 4, 0.0, lora_b_init=t).mindpet_delta_lora_b),
    ("LoRADense", "weight_init", (OUT, IN), lambda t: LoRADense(IN, OUT, RANK, 4, 0.0, weight_init=t).weight),
    ("LoRADense", "bias_init", (OUT,), lambda t: LoRADense(IN, OUT, RANK, 4, 0.0, bias_init=t).bias),
    ("AdapterDense", "weight_init", (OUT, IN), lambda t: AdapterDense(IN, OUT, weight_init=t, bottleneck_size=2).weight),
    ("AdapterDense", "bias_init", (OUT,), lambda t: AdapterDense(IN, OUT, bias_init=t, bottleneck_size=2).bias),
    ("LowRankAdapterDense", "weight_init", (OUT, IN),
     lambda t: LowRankAdapterDense(IN, OUT, weight_init=t, reduction_factor=2).weight),
    ("LowRankAdapterDense", "bias_init", (OUT,),
     lambda t: LowRankAdapterDense(IN, OUT, bias_init=t, reduction_factor=2).bias),
    ("PromptTuning", "embedding_init", (3, OUT),
     lambda t: PromptTuning(3, OUT, embedding_init=t).mindpet_delta_prompttuning_embedding),
]


@pytest.mark.parametrize("dtype", [mstype.int8, mstype.float32], ids=["int8", "float32"])
@pytest.mark.parametrize("layer,arg,shape,build", LAZY_CASES, ids=[f"{c[0]}.{c[1]}" for c in LAZY_CASES])
def test_lazily_initialised_tensor_is_accepted_as_init(pynative, layer, arg, shape, build, dtype):
    lazy = Tensor(shape=shape, dtype=dtype, init=One())
    assert lazy.has_init
    param = build(lazy)  # crashed the process (segfault in astype) before
    assert param.dtype == mstype.float32 and tuple(param.shape) == shape
    np.testing.assert_array_equal(param.asnumpy(), np.ones(shape, np.float32))


@pytest.mark.parametrize("layer,arg,shape,build", LAZY_CASES[:1], ids=["LoRADense.lora_a_init"])
def test_lazy_tensor_of_the_wrong_shape_is_still_a_value_error(pynative, layer, arg, shape, build):
    with pytest.raises(ValueError, match=arg):
        build(Tensor(shape=(shape[0] + 1,) + shape[1:], dtype=mstype.float32, init=One()))
