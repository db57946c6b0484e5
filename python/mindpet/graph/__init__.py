"""Graph operations: freezing by delta mode or wildcard, trainable-only checkpoints, evaluation loading.

Works on parameter names only; it does not import ``mindpet.delta`` or ``mindpet.kernels``.
"""
from mindpet.graph.freeze_utils import FreezeResult, freeze_delta, freeze_from_config, freeze_modules
from mindpet.graph.ckpt_util import TrainableParamsCheckPoint
from mindpet.graph.loading import LoadReport, load_pretrained_and_delta

__all__ = ["freeze_modules", "freeze_delta", "freeze_from_config", "FreezeResult",
           "TrainableParamsCheckPoint", "load_pretrained_and_delta", "LoadReport"]
