"""Deformable convolution (DCNv1) that also runs under reduced-precision autocast on a CPU."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import deform_conv2d

CPU_DTYPES = (torch.float32, torch.float64)  # what torchvision's CPU deformable convolution computes


def deform_conv(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, *, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0) -> Tensor:
    """``torchvision.ops.deform_conv2d``; on a CPU, bf16 or fp16 inputs (autocast) are computed in
    fp32 and the result is returned in their dtype."""
    if x.device.type == "cpu" and x.dtype not in CPU_DTYPES:
        out = deform_conv2d(x.float(), offset.float(), weight.float(), None if bias is None else bias.float(),
                            stride=stride, padding=padding)
        return out.to(x.dtype)
    return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding)
