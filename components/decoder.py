"""The IAM-based decoder: instance branch + IAM + heads, and the mask branch (SPEC 1.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from .deform import deform_conv
from .init import c2_msra_fill, normal_fill, prior_bias
from .registry import register

NUM_INSTANCES = 100
KERNEL_DIM = 128
BRANCH_DEPTH = 4
BRANCH_WIDTH = 256
HEAD_INIT_STD = 0.01
MASK_OUTPUT_STRIDE = 4  # the mask logits the decoder returns are (B, N, H/4, W/4) at every mask stride
MASK_UPSAMPLE = 2  # the authors' mask logits are drawn at stride 8 and upsampled bilinearly to stride 4
MaskStride = Literal[8, 4]  # the grid the mask logits are drawn on (see ``SparseInstDecoder``)
COORD_CHANNELS = 2


class SparseInstOutput(NamedTuple):
    """Raw predictions for a batch of B images of padded size H x W."""

    logits: Tensor  # (B, N, C) class logits
    objectness: Tensor  # (B, N, 1) IoU-aware objectness logits
    masks: Tensor  # (B, N, H/4, W/4) mask logits (drawn at the decoder's mask_stride)
    maps: Tensor | None = None  # (B, N, G, H/8, W/8) normalized activation maps, on request


def coordinate_features(features: Tensor) -> Tensor:
    """(B, 2, H, W): x then y, each -1 + 2j / (size - 1) so they span [-1, 1]."""
    batch, _, height, width = features.shape

    def ramp(size: int) -> Tensor:
        steps = torch.arange(size, device=features.device, dtype=torch.float32)
        return (-1.0 + 2.0 * steps / max(size - 1, 1)).to(features.dtype)

    y, x = torch.meshgrid(ramp(height), ramp(width), indexing="ij")
    return torch.stack([x, y]).unsqueeze(0).expand(batch, -1, -1, -1)


class OffsetDeformConv(nn.Module):
    """3x3 DCNv1 whose offsets come from a zero-initialized 3x3 conv on the same input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 18, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1)
        c2_msra_fill(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        return deform_conv(x, self.offset(x), self.conv.weight, self.conv.bias, stride=self.conv.stride,
                           padding=self.conv.padding)


class MaskDetail(nn.Module):
    """Mask features at stride 4 from the mask branch at stride 8: the projected features
    upsampled bilinearly x2, plus a sub-pixel detail term, a 2x2 stride-2 transposed convolution
    of the branch's features (each stride-4 cell its own linear read-out of its stride-8 cell;
    Shi et al. 2016), zero-initialized.

    At initialization the detail is 0, and since bilinear upsampling commutes with the per-pixel
    kernel product, the masks equal the stride-8 decoder's with the same weights (up to float
    rounding): a stride-8 model loaded by ``init_from`` starts where it was, and training adds
    the detail the stride-8 grid cannot draw.

    Shapes: branch (B, C, h, w) and projected (B, K, h, w) -> (B, K, 2h, 2w).
    """

    def __init__(self, in_channels: int, kernel_dim: int) -> None:
        super().__init__()
        self.subpixel = nn.ConvTranspose2d(in_channels, kernel_dim, MASK_UPSAMPLE, stride=MASK_UPSAMPLE, bias=False)
        nn.init.zeros_(self.subpixel.weight)

    def forward(self, branch: Tensor, projected: Tensor) -> Tensor:
        upsampled = F.interpolate(projected, scale_factor=MASK_UPSAMPLE, mode="bilinear", align_corners=False)
        return upsampled + self.subpixel(branch)


def conv_stack(depth: int, in_channels: int, width: int, deformable_last: bool = False) -> nn.Sequential:
    """``depth`` x (3x3 conv + ReLU); the convs sit at even indices, as in the authors' layout."""
    layers: list[nn.Module] = []
    for index in range(depth):
        channels = in_channels if index == 0 else width
        if deformable_last and index == depth - 1:
            conv: nn.Module = OffsetDeformConv(channels, width)
        else:
            conv = nn.Conv2d(channels, width, 3, padding=1)
            c2_msra_fill(conv)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@register("decoder", "iam_decoder")
class SparseInstDecoder(nn.Module):
    """Instance branch -> IAM -> class / kernel / objectness heads; mask branch -> masks.

    Args:
        in_channels: D, the encoder's width.
        num_classes: C.
        iam: builds the IAM strategy, called as ``iam(in_channels=inst_width,
            num_instances=num_instances)``.
        coord_features: concatenate x, y coordinates in front of the features.
        deformable_last: make the last conv of each branch deformable.
        mask_stride: the grid the mask logits are drawn on. 8 (the authors' model and layout):
            kernels x mask features on F's grid, then bilinear x2. 4: the mask features get a
            learned sub-pixel detail at stride 4 and the product is taken there, so each stride-4
            cell of a mask is free (small objects; see ``MaskDetail``). The output has the same
            shape either way.

    Shapes: F (B, D, H/8, W/8) -> ``SparseInstOutput``; masks (B, N, 2 * H/8, 2 * W/8).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        iam: Callable[..., nn.Module],
        *,
        num_instances: PositiveInt = NUM_INSTANCES,
        kernel_dim: PositiveInt = KERNEL_DIM,
        inst_depth: PositiveInt = BRANCH_DEPTH,
        inst_width: PositiveInt = BRANCH_WIDTH,
        mask_depth: PositiveInt = BRANCH_DEPTH,
        mask_width: PositiveInt = BRANCH_WIDTH,
        coord_features: bool = True,
        deformable_last: bool = False,
        mask_stride: MaskStride = 8,
    ) -> None:
        super().__init__()
        if mask_stride not in (8, 4):
            raise ValueError(f"mask_stride must be 8 or 4, got {mask_stride}")
        self.coord_features = coord_features
        self.mask_stride = mask_stride
        branch_in = in_channels + (COORD_CHANNELS if coord_features else 0)
        self.inst_convs = conv_stack(inst_depth, branch_in, inst_width, deformable_last)
        self.iam = iam(in_channels=inst_width, num_instances=num_instances)
        features = self.iam.out_channels
        self.cls_score = nn.Linear(features, num_classes)
        self.mask_kernel = nn.Linear(features, kernel_dim)
        self.objectness = nn.Linear(features, 1)
        normal_fill(self.cls_score, HEAD_INIT_STD, prior_bias())
        normal_fill(self.mask_kernel, HEAD_INIT_STD, 0.0)
        self.mask_convs = conv_stack(mask_depth, branch_in, mask_width, deformable_last)
        self.mask_projection = nn.Conv2d(mask_width, kernel_dim, 1)
        c2_msra_fill(self.mask_projection)
        # Stride 4 only, so that the authors' layout (and a stride-8 model's) is unchanged at 8.
        self.mask_detail = MaskDetail(mask_width, kernel_dim) if mask_stride == 4 else None

    def forward(self, features: Tensor, return_maps: bool = False) -> SparseInstOutput:
        if self.coord_features:
            features = torch.cat([coordinate_features(features), features], dim=1)
        maps, instance_features = self.iam(self.inst_convs(features))
        kernels = self.mask_kernel(instance_features)  # (B, N, K)
        branch = self.mask_convs(features)  # (B, mask_width, h, w)
        mask_features = self.mask_projection(branch)  # (B, K, h, w)
        if self.mask_detail is not None:
            mask_features = self.mask_detail(branch, mask_features)  # (B, K, 2h, 2w)
        with torch.autocast(features.device.type, enabled=False):  # fp32: large logits overflow fp16
            masks = torch.bmm(kernels.float(), mask_features.flatten(2).float())
        masks = masks.unflatten(-1, mask_features.shape[-2:])
        if self.mask_detail is None:
            masks = F.interpolate(masks, scale_factor=MASK_UPSAMPLE, mode="bilinear", align_corners=False)
        return SparseInstOutput(
            logits=self.cls_score(instance_features),
            objectness=self.objectness(instance_features),
            masks=masks,
            maps=maps if return_maps else None,
        )
