"""Frozen batch norm is a fixed per-channel affine map, so a convolution followed by it is one
convolution with weights ``w * scale`` and bias ``shift``.

Training runs that single convolution: the same function of the trainable weights, without the
two full-size elementwise passes (and their backward) that the separate norm costs, which were
two thirds of EfficientNet-Lite0's training forward. Evaluation keeps the separate norm, whose
rounding is the authors'; the inference fast path folds the weights once, in place.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.ops.misc import FrozenBatchNorm2d


def frozen_norm_affine(norm: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` per channel."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


def folded_weight_and_bias(weight: Tensor, bias: Tensor | None, norm: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of the one convolution equal to ``norm(conv(x))``."""
    scale, shift = frozen_norm_affine(norm)
    folded_bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), folded_bias
