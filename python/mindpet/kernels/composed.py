"""Composed references of the fused ops: MindSpore primitives only, differentiated by autodiff.

These define the results every fused implementation must reproduce (``ops/CONTRACTS.md``). They
are plain functions of tensors, usable in PYNATIVE mode and inside ``construct`` in GRAPH mode.
Shapes: ``x``/``h`` are 2-D ``[M, *]``; every tensor of a call has one dtype. The composed
``activation`` is :class:`~mindpet.kernels.activations.ComposedActivation`.
"""
from __future__ import annotations

from mindspore import ops

_matmul = ops.MatMul()
_matmul_nt = ops.MatMul(transpose_b=True)
_bias_add = ops.BiasAdd()


def lora_linear_composed(x, weight, bias, lora_a, lora_b, scale: float, mask=None):
    r"""``y = x W^T + b + s (x_d A^T) B^T`` with ``x_d = x * mask`` (``x`` when ``mask`` is None).

    Shapes: x ``[M, K]``, weight ``[N, K]``, bias ``[N]`` or None, lora_a ``[R, K]``,
    lora_b ``[N, R]``, mask ``[M, K]`` (values 0 or 1/(1-p)) or None; returns ``[M, N]``.
    """
    y = _matmul_nt(x, weight)
    if bias is not None:
        y = _bias_add(y, bias)
    x_d = x if mask is None else x * mask
    u = _matmul_nt(x_d, lora_a)
    return y + _matmul_nt(u, lora_b) * scale


def adapter_composed(h, w_down, b_down, w_up, b_up, activation):
    r"""``y = h + act(h W_down^T + b_down) W_up^T + b_up``.

    Shapes: h ``[M, D]``, w_down ``[B, D]``, b_down ``[B]``, w_up ``[D, B]``, b_up ``[D]``;
    ``activation`` is a Cell or Primitive (e.g. :class:`~mindpet.kernels.activations.ComposedActivation`).
    """
    z = _bias_add(_matmul_nt(h, w_down), b_down)
    return h + _bias_add(_matmul_nt(activation(z), w_up), b_up)


def low_rank_adapter_composed(h, down_left, down_right, b_down, up_left, up_right, b_up, activation):
    r"""``y = h + act(h L_dl L_dr + b_down) L_ul L_ur + b_up``, through the factors (never ``L_dl L_dr``).

    Shapes: h ``[M, D]``, down_left ``[D, R]``, down_right ``[R, B]``, b_down ``[B]``,
    up_left ``[B, R]``, up_right ``[R, D]``, b_up ``[D]``.
    """
    z = _bias_add(_matmul(_matmul(h, down_left), down_right), b_down)
    return h + _bias_add(_matmul(_matmul(activation(z), up_left), up_right), b_up)


def layer_norm_primitive(epsilon: float) -> ops.LayerNorm:
    """MindSpore's LayerNorm over the last dim (what ``nn.LayerNorm((D,), epsilon=...)`` runs)."""
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=float(epsilon))


def layer_norm_composed(x, gamma, beta, norm, residual=None):
    r"""``y = (s - mean) / sqrt(var + eps) * gamma + beta`` over the last dim, ``s = x + residual`` (or ``x``).

    Shapes: x ``[*, D]``, residual like x or None, gamma/beta ``[D]``; ``norm`` is
    :func:`layer_norm_primitive` ``(eps)``. Returns ``[*, D]``.
    """
    s = x if residual is None else x + residual
    y, _, _ = norm(s, gamma, beta)
    return y
