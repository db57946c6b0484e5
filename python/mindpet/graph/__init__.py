"""Graph operations: freezing by delta mode or wildcard, trainable-only checkpoints, evaluation loading."""
from mindpet.graph.freeze_utils import freeze_delta, freeze_from_config, freeze_modules
from mindpet.graph.ckpt_util import TrainableParamsCheckPoint
from mindpet.graph.loading import load_pretrained_and_delta

__all__ = ["freeze_modules", "freeze_delta", "freeze_from_config", "TrainableParamsCheckPoint",
           "load_pretrained_and_delta"]
