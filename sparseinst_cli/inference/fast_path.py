"""A faster model for inference: frozen batch norm folded into the convolutions, NHWC activations,
Winograd 3x3 convolutions on CPU, optionally ``torch.compile``. Outputs equal the plain model's to
float tolerance.

Frozen batch norm is a fixed per-channel affine map, so ``norm(conv(x))`` equals one convolution
with weights ``w * scale`` and bias ``shift``. A module whose ``.norm`` is a ``FrozenBatchNorm2d``
either is the convolution (the ResNet ``ConvNorm``) or holds it as ``.conv`` (EfficientNet's ``ConvNormAct``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from components import SparseInst
from components.frozen_norm import folded_weight_and_bias

from .winograd import use_winograd


def _conv_of(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, nn.Conv2d):
        return module
    conv = getattr(module, "conv", None)
    return conv if isinstance(conv, nn.Conv2d) else None


@torch.no_grad()
def fold_frozen_batch_norm(model: nn.Module) -> int:
    """Fold every frozen batch norm that follows a convolution into it, in place; returns how many."""
    folded = 0
    for module in model.modules():
        norm, conv = getattr(module, "norm", None), _conv_of(module)
        if not isinstance(norm, FrozenBatchNorm2d) or conv is None or conv.out_channels != norm.weight.numel():
            continue
        weight, bias = folded_weight_and_bias(conv.weight, conv.bias, norm)
        conv.weight.copy_(weight)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        module.norm = nn.Identity()
        folded += 1
    return folded


def optimize_for_inference(model: SparseInst, *, channels_last: bool = True, winograd: bool = False,
                           compile: bool = False) -> nn.Module:
    """A copy of ``model`` for inference: batch norm folded, NHWC weights, wide 3x3 convolutions
    run by Winograd's algorithm when ``winograd`` (fp32 on CPU; elsewhere they run as before),
    optionally compiled.

    Feed it NHWC images (``images.contiguous(memory_format=torch.channels_last)``) for the
    full benefit; any layout gives the same result.
    """
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    fold_frozen_batch_norm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if winograd:
        use_winograd(fast)
    if compile:
        fast = torch.compile(fast, dynamic=True)
    return fast
