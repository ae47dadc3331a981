"""Instance activation maps (IAMs): the strategy that turns instance-branch features into one
feature vector per instance.

Every strategy maps features (B, D, H, W) to an ``IAMResult``: the normalized activation maps
(B, N, G, H, W), G maps per instance (G = 1 except for Group-IAM), and the instance features
(B, N, ``out_channels``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor, nn

from .init import c2_msra_fill, c2_xavier_fill, normal_fill, prior_bias
from .registry import register

IAM_INIT_STD = 0.01
SIGMOID_NORM_EPS = 1e-6  # each sigmoid map is divided by max(its sum, eps)
SOFTMAX_BIAS_INIT = 1.0
GROUP_IAM_GROUPS = 4
CROSS_ATTENTION_HEADS = 4

Activation = Literal["sigmoid", "softmax"]


class IAMResult(NamedTuple):
    maps: Tensor  # (B, N, G, H, W), each map sums to 1 over H x W
    features: Tensor  # (B, N, out_channels)


class ConvIAM(nn.Module):
    """IAMs predicted by a (grouped) convolution and normalized over space.

    With ``groups`` = G the conv maps D -> N * G channels in G groups; channel ``c`` is group
    ``c // N`` of instance ``c % N``. An instance's G feature vectors are concatenated group-major
    and, with ``group_fc``, mixed by Linear(G * D, G * D) + ReLU.

    Args:
        activation: "sigmoid" (maps divided by their sum) or "softmax" over H x W of
            ``logits + softmax_bias``, a learnable scalar.
        kernel_size: 3 (paper) or 1 (ablation).
        extra_conv: a 3x3 conv + ReLU before the IAM conv (ablation).
    """

    def __init__(
        self,
        in_channels: int,
        num_instances: int,
        *,
        groups: int = 1,
        activation: Activation = "sigmoid",
        kernel_size: Literal[1, 3] = 3,
        extra_conv: bool = False,
        group_fc: bool = False,
    ) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"IAM groups ({groups}) must divide the instance-branch width ({in_channels})")
        self.num_instances, self.groups = num_instances, groups
        self.out_channels = in_channels * groups
        self.extra_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1) if extra_conv else None
        if self.extra_conv is not None:
            c2_msra_fill(self.extra_conv)
        self.conv = nn.Conv2d(in_channels, num_instances * groups, kernel_size, padding=kernel_size // 2, groups=groups)
        normal_fill(self.conv, IAM_INIT_STD, prior_bias())
        self.softmax_bias = nn.Parameter(torch.full((1,), SOFTMAX_BIAS_INIT)) if activation == "softmax" else None
        self.group_fc = nn.Linear(self.out_channels, self.out_channels) if group_fc else None
        if self.group_fc is not None:
            c2_xavier_fill(self.group_fc)

    def forward(self, features: Tensor) -> IAMResult:
        x = F.relu(self.extra_conv(features)) if self.extra_conv is not None else features
        # Normalized in fp32 whatever the autocast dtype: an fp16 sum over a large map can overflow.
        logits = self.conv(x).flatten(2).float()  # (B, G * N, HW)
        if self.softmax_bias is not None:
            maps = F.softmax(logits + self.softmax_bias, dim=-1)
        else:
            maps = logits.sigmoid()
            maps = maps / maps.sum(-1, keepdim=True).clamp(min=SIGMOID_NORM_EPS)
        grouped = torch.bmm(maps.to(features.dtype), features.flatten(2).transpose(1, 2))  # (B, G * N, D)
        grouped = grouped.unflatten(1, (self.groups, self.num_instances)).transpose(1, 2)  # (B, N, G, D)
        instance_features = grouped.flatten(2)
        if self.group_fc is not None:
            instance_features = F.relu(self.group_fc(instance_features))
        maps = maps.unflatten(1, (self.groups, self.num_instances)).transpose(1, 2)
        return IAMResult(maps.unflatten(-1, features.shape[-2:]), instance_features)


class CrossAttentionIAM(nn.Module):
    """N learned queries attend over the flattened features; the attention output is the
    instance feature and the head-averaged attention weights are the maps."""

    def __init__(self, in_channels: int, num_instances: int, *, num_heads: int = CROSS_ATTENTION_HEADS) -> None:
        super().__init__()
        if in_channels % num_heads:
            raise ValueError(f"attention heads ({num_heads}) must divide the instance-branch width ({in_channels})")
        self.out_channels = in_channels
        self.queries = nn.Parameter(torch.randn(num_instances, in_channels) * IAM_INIT_STD)
        self.attention = nn.MultiheadAttention(in_channels, num_heads, batch_first=True)

    def forward(self, features: Tensor) -> IAMResult:
        tokens = features.flatten(2).transpose(1, 2)  # (B, HW, D)
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        instance_features, weights = self.attention(queries, tokens, tokens, need_weights=True)
        return IAMResult(weights.unflatten(-1, features.shape[-2:]).unsqueeze(2), instance_features)


@register("iam", "sigmoid")
def sigmoid_iam(
    in_channels: int, num_instances: int, kernel_size: Literal[1, 3] = 3, extra_conv: bool = False
) -> ConvIAM:
    """Vanilla IAM: sigmoid maps, each divided by its sum over H x W."""
    return ConvIAM(in_channels, num_instances, kernel_size=kernel_size, extra_conv=extra_conv)


@register("iam", "softmax")
def softmax_iam(
    in_channels: int, num_instances: int, kernel_size: Literal[1, 3] = 3, extra_conv: bool = False
) -> ConvIAM:
    """Softmax over H x W of the IAM logits plus a learnable bias."""
    return ConvIAM(in_channels, num_instances, activation="softmax", kernel_size=kernel_size, extra_conv=extra_conv)


@register("iam", "group")
def group_iam(
    in_channels: int,
    num_instances: int,
    groups: PositiveInt = GROUP_IAM_GROUPS,
    activation: Activation = "sigmoid",
    kernel_size: Literal[1, 3] = 3,
    extra_conv: bool = False,
) -> ConvIAM:
    """Group-IAM: G maps per instance from a grouped conv, fused by Linear + ReLU."""
    return ConvIAM(
        in_channels,
        num_instances,
        groups=groups,
        activation=activation,
        kernel_size=kernel_size,
        extra_conv=extra_conv,
        group_fc=True,
    )


@register("iam", "cross_attention")
def cross_attention_iam(
    in_channels: int, num_instances: int, num_heads: PositiveInt = CROSS_ATTENTION_HEADS
) -> CrossAttentionIAM:
    """Multi-head cross-attention from N learned queries (paper's comparison)."""
    return CrossAttentionIAM(in_channels, num_instances, num_heads=num_heads)
