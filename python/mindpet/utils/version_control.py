"""MindSpore-version shims imported by mindformers (``from mindpet.utils.version_control import get_dropout``).

MindSpore renamed ``nn.Dropout``'s argument from ``keep_prob`` (probability of *keeping* an element,
MindSpore < 1.11) to ``p`` (probability of *dropping* it, 1.11 and later; ``keep_prob`` still works in
2.x with a deprecation warning). :func:`get_dropout` builds the layer with whichever argument the
installed MindSpore's ``nn.Dropout`` takes, decided once from its signature (not from a version string).
"""
from __future__ import annotations

import inspect

from mindspore import nn

from mindpet.delta.prefix_layer import check_dropout_rate

__all__ = ["get_dropout"]

_DROPOUT_TAKES_P = "p" in inspect.signature(nn.Dropout.__init__).parameters


def get_dropout(dropout_prob: float) -> nn.Dropout:
    """An ``nn.Dropout`` that zeroes each element with probability ``dropout_prob`` in training mode.

    Built as ``nn.Dropout(p=dropout_prob)``, or ``nn.Dropout(keep_prob=1 - dropout_prob)`` where the
    installed MindSpore has no ``p`` argument. Kept elements are scaled by ``1 / (1 - dropout_prob)``;
    in evaluation mode (``set_train(False)``) the layer is the identity.

    Raises:
        TypeError: ``dropout_prob`` not an int or float (bool included).
        ValueError: ``dropout_prob`` outside [0, 1).
    """
    rate = check_dropout_rate(dropout_prob, "dropout_prob", "get_dropout")
    if _DROPOUT_TAKES_P:
        return nn.Dropout(p=rate)
    return nn.Dropout(keep_prob=1.0 - rate)
