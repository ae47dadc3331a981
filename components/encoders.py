"""Instance context encoders: multi-scale C3-C5 features in, one stride-8 map F out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor, nn

from .init import c2_msra_fill, c2_xavier_fill
from .registry import register

FEATURE_STRIDE = 8  # F's stride: the masks are drawn on this grid (SPEC 1.1)
PPM_POOL_SIZES = (1, 2, 3, 6)
PPM_REDUCTION = 4  # each pooled branch has D / 4 channels


def pooling_matrix(length: int, bins: int, like: Tensor) -> Tensor:
    """(bins, length) weights of adaptive average pooling along one axis: bin i averages
    positions floor(i * length / bins) .. ceil((i + 1) * length / bins) - 1, as PyTorch's does."""
    index = torch.arange(bins, device=like.device)
    start = torch.div(index * length, bins, rounding_mode="floor")
    end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")
    position = torch.arange(length, device=like.device)
    inside = ((position[None] >= start[:, None]) & (position[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


def adaptive_average_pool(x: Tensor, size: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two matrix products, so that exported graphs (ONNX)
    keep working at input sizes other than the one they were traced at."""
    rows = pooling_matrix(x.shape[-2], size, x)
    cols = pooling_matrix(x.shape[-1], size, x)
    return torch.einsum("ih,bchw,jw->bcij", rows, x, cols)


class AdaptivePool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` that exports to ONNX with dynamic input sizes."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_average_pool(x, self.size)


class PyramidPooling(nn.Module):
    """Adaptive average pools to several grid sizes, 1x1 conv + ReLU each, upsampled back and
    fused with the input by a 1x1 conv + ReLU. Works on maps of any size, down to 1x1."""

    def __init__(self, channels: int, pool_sizes: tuple[int, ...] = PPM_POOL_SIZES) -> None:
        super().__init__()
        branch_channels = channels // PPM_REDUCTION
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptivePool(size), nn.Conv2d(channels, branch_channels, 1)) for size in pool_sizes
        )
        self.bottleneck = nn.Conv2d(channels + len(pool_sizes) * branch_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(F.relu(stage(x)), size=size, mode="bilinear", align_corners=False) for stage in self.stages
        ]
        return F.relu(self.bottleneck(torch.cat([*pooled, x], dim=1)))


class InstanceContextEncoder(nn.Module):
    """FPN over C3-C5 with optional pyramid pooling on C5 and fusion of P3-P5 (SPEC 1.3).

    Args:
        in_channels: channels of C3, C4, C5.
        channels: D, the width of every level and of the output.
        pyramid_pooling: apply ``PyramidPooling`` to the C5 lateral.
        fusion: concatenate P3 and P4, P5 (bilinearly resized to P3) and mix by a 1x1 conv;
            without it the output is P3 alone.

    Shapes: ``[C3, C4, C5]`` -> F of shape (B, channels, H3, W3).
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int],
        channels: int = 256,
        *,
        pyramid_pooling: bool = True,
        fusion: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = channels
        # Index 0 is C5, as in the authors' layout.
        self.fpn_laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in reversed(in_channels))
        self.fpn_outputs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        for conv in [*self.fpn_laterals, *self.fpn_outputs]:
            c2_xavier_fill(conv)
        self.ppm = PyramidPooling(channels) if pyramid_pooling else None
        self.fusion = nn.Conv2d(channels * len(in_channels), channels, 1) if fusion else None
        if self.fusion is not None:
            c2_msra_fill(self.fusion)

    def forward(self, features: list[Tensor]) -> Tensor:
        c5, *finer = reversed(features)
        top = self.fpn_laterals[0](c5)
        if self.ppm is not None:
            top = self.ppm(top)
        outputs = [self.fpn_outputs[0](top)]
        for feature, lateral, output in zip(finer, self.fpn_laterals[1:], self.fpn_outputs[1:]):
            lateral_features = lateral(feature)
            top = lateral_features + F.interpolate(top, size=lateral_features.shape[-2:], mode="nearest")
            outputs.insert(0, output(top))
        if self.fusion is None:
            return outputs[0]
        size = outputs[0].shape[-2:]
        resized = [outputs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in outputs[1:]]
        return self.fusion(torch.cat(resized, dim=1))


@register("encoder", "instance_context")
def instance_context(in_channels: tuple[int, int, int], channels: PositiveInt = 256) -> InstanceContextEncoder:
    """FPN + pyramid pooling + multi-scale fusion (the paper's encoder)."""
    return InstanceContextEncoder(in_channels, channels)


@register("encoder", "fpn")
def fpn(in_channels: tuple[int, int, int], channels: PositiveInt = 256) -> InstanceContextEncoder:
    """Ablation: plain FPN, single level P3 (paper Table 2, first row)."""
    return InstanceContextEncoder(in_channels, channels, pyramid_pooling=False, fusion=False)


@register("encoder", "fpn_ppm")
def fpn_ppm(in_channels: tuple[int, int, int], channels: PositiveInt = 256) -> InstanceContextEncoder:
    """Ablation: FPN + pyramid pooling, single level P3 (paper Table 2, second row)."""
    return InstanceContextEncoder(in_channels, channels, fusion=False)
