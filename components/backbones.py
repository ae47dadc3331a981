"""ResNet backbones with frozen batch norm, returning C3, C4, C5 (strides 8, 16, 32).

Parameter names follow detectron2's layout (``stem.conv1``, ``res2.0.conv1.norm``...), which is
the layout of the authors' R-50 checkpoints; other layouts are mapped onto it by
``components.pretrained``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .deform import deform_conv
from .frozen_norm import folded_weight_and_bias
from .registry import register

FROZEN_BN_EPS = 1e-5
OFFICIAL_FREEZE_AT = 0  # every official SparseInst config trains the stem and every stage (FREEZE_AT: 0)
DCN_OFFSET_CHANNELS = 18  # DCNv1, one deformable group: (dy, dx) for each of the 3x3 taps
BOTTLENECK_EXPANSION = 4

Stage = Literal[2, 3, 4, 5]


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by frozen batch norm (stored as ``.norm``).

    ``forward(x, offset)`` runs it as a deformable convolution with those offsets.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels, eps=FROZEN_BN_EPS)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor | None = None) -> Tensor:
        if self.training and isinstance(self.norm, FrozenBatchNorm2d):  # not yet folded for inference
            weight, bias = folded_weight_and_bias(self.weight, self.bias, self.norm)
            return self._convolve(x, offset, weight, bias)
        return self.norm(self._convolve(x, offset, self.weight, self.bias))

    def _convolve(self, x: Tensor, offset: Tensor | None, weight: Tensor, bias: Tensor | None) -> Tensor:
        if offset is None:
            return F.conv2d(x, weight, bias, self.stride, self.padding)
        return deform_conv(x, offset, weight, bias, stride=self.stride, padding=self.padding)


class Shortcut(ConvNorm):
    """Projection shortcut; ``avg_down`` (ResNet-D) average-pools before a stride-1 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, avg_down: bool) -> None:
        super().__init__(in_channels, out_channels, 1, 1 if avg_down else stride)
        self.pool = (
            nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
            if avg_down and stride > 1
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(self.pool(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride, optionally deformable) -> 1x1, plus shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int, *, deformable: bool, avg_down: bool) -> None:
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride, avg_down)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.conv1 = ConvNorm(in_channels, width, 1)
        self.conv2 = ConvNorm(width, width, 3, stride)
        self.conv2_offset = _offset_conv(width, stride) if deformable else None
        self.conv3 = ConvNorm(width, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        offset = self.conv2_offset(out) if self.conv2_offset is not None else None
        out = F.relu(self.conv2(out, offset), inplace=True)
        out = self.conv3(out)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(out + identity, inplace=True)


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride; the second optionally deformable)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, *, deformable: bool, avg_down: bool) -> None:
        super().__init__()
        self.shortcut = (
            Shortcut(in_channels, width, stride, avg_down) if stride != 1 or in_channels != width else None
        )
        self.conv1 = ConvNorm(in_channels, width, 3, stride)
        self.conv2 = ConvNorm(width, width, 3)
        self.conv2_offset = _offset_conv(width, 1) if deformable else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        offset = self.conv2_offset(out) if self.conv2_offset is not None else None
        out = self.conv2(out, offset)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(out + identity, inplace=True)


def _offset_conv(channels: int, stride: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, DCN_OFFSET_CHANNELS, 3, stride, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Stem(nn.Module):
    """7x7 stride-2 conv, or the ResNet-D deep stem (three 3x3 convs), then a 3x3 max pool."""

    def __init__(self, width: int, deep: bool) -> None:
        super().__init__()
        if deep:
            self.conv1 = ConvNorm(3, width, 3, 2)
            self.conv2 = ConvNorm(width, width, 3)
            self.conv3 = ConvNorm(width, 2 * width, 3)
            self.out_channels = 2 * width
        else:
            self.conv1 = ConvNorm(3, width, 7, 2)
            self.out_channels = width

    def forward(self, x: Tensor) -> Tensor:
        *first, last = self.children()  # conv1 (, conv2, conv3)
        for conv in first:
            x = F.relu(conv(x), inplace=True)
        # Pooling before the last ReLU gives the same values (max commutes with ReLU) on a quarter of the
        # elements, and keeps ONNX Runtime's int8 graphs from pooling in slow uint8 NCHW (pool -> Q).
        x = F.max_pool2d(last(x), kernel_size=3, stride=2, padding=1)
        return F.relu(x, inplace=True)


class ResNet(nn.Module):
    """ResNet returning ``[C3, C4, C5]``; ``out_channels`` gives their widths.

    Args:
        depths: blocks in res2..res5.
        block: ``Bottleneck`` or ``BasicBlock``.
        stem_width: width of the stem (the deep stem ends at twice this).
        base_width: width of res2's 3x3 convs; each later stage doubles it.
        deep_stem, avg_down: the ResNet-D ("vd") changes.
        deform_stages: stages whose 3x3 convs are deformable (DCNv1).
        freeze_at: 0 trains everything, 1 freezes the stem, k freezes the stem and res2..res{k}.
    """

    def __init__(
        self,
        depths: tuple[int, int, int, int],
        block: type[Bottleneck] | type[BasicBlock],
        *,
        stem_width: int,
        base_width: int,
        deep_stem: bool,
        avg_down: bool,
        deform_stages: tuple[int, ...] = (),
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        self.stem = Stem(stem_width, deep_stem)
        expansion = BOTTLENECK_EXPANSION if block is Bottleneck else 1
        in_channels = self.stem.out_channels
        widths = []
        for index, depth in enumerate(depths):
            stage = index + 2
            width = base_width * 2**index
            blocks = []
            for i in range(depth):
                stride = 2 if i == 0 and stage > 2 else 1
                blocks.append(block(in_channels, width, stride, deformable=stage in deform_stages, avg_down=avg_down))
                in_channels = width * expansion
            self.add_module(f"res{stage}", nn.Sequential(*blocks))
            widths.append(in_channels)
        self.out_channels: tuple[int, int, int] = tuple(widths[1:])  # type: ignore[assignment]
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        frozen = [self.stem] + [getattr(self, f"res{stage}") for stage in range(2, freeze_at + 1)]
        for module in frozen[:freeze_at]:
            module.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.res2(self.stem(x))
        c3 = self.res3(x)
        c4 = self.res4(c3)
        return [c3, c4, self.res5(c4)]


FreezeAt = Annotated[int, Field(ge=0, le=5)]


def _resnet_factory(
    depths: tuple[int, int, int, int],
    block: type[Bottleneck] | type[BasicBlock],
    *,
    deep_stem: bool,
    default_stem_width: int,
    doc: str,
) -> Callable[..., ResNet]:
    def factory(
        stem_width: PositiveInt = default_stem_width,
        base_width: PositiveInt = 64,
        deform_stages: tuple[Stage, ...] = (),
        freeze_at: FreezeAt = OFFICIAL_FREEZE_AT,
        weights: str | None = None,
    ) -> ResNet:
        model = ResNet(
            depths,
            block,
            stem_width=stem_width,
            base_width=base_width,
            deep_stem=deep_stem,
            avg_down=deep_stem,
            deform_stages=deform_stages,
            freeze_at=freeze_at,
        )
        if weights is not None:
            from .pretrained import load_backbone_weights

            load_backbone_weights(model, weights)
        return model

    factory.__doc__ = doc + " ``weights``: a local ImageNet checkpoint (torchvision, timm or native layout)."
    return factory


register("backbone", "resnet18")(
    _resnet_factory((2, 2, 2, 2), BasicBlock, deep_stem=False, default_stem_width=64, doc="ResNet-18 (C3-C5: 128/256/512).")
)
register("backbone", "resnet34")(
    _resnet_factory((3, 4, 6, 3), BasicBlock, deep_stem=False, default_stem_width=64, doc="ResNet-34 (C3-C5: 128/256/512).")
)
register("backbone", "resnet50")(
    _resnet_factory((3, 4, 6, 3), Bottleneck, deep_stem=False, default_stem_width=64, doc="ResNet-50 (C3-C5: 512/1024/2048).")
)
register("backbone", "resnet101")(
    _resnet_factory((3, 4, 23, 3), Bottleneck, deep_stem=False, default_stem_width=64, doc="ResNet-101 (C3-C5: 512/1024/2048).")
)
register("backbone", "resnet50vd")(
    _resnet_factory((3, 4, 6, 3), Bottleneck, deep_stem=True, default_stem_width=32, doc="ResNet-50-D: deep stem, avg-pool shortcuts.")
)
