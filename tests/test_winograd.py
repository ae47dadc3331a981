"""Winograd F(4x4, 3x3) convolution: equal to the direct convolution, and wrapped only where it applies."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.backbones import ConvNorm
from sparseinst_cli.inference.fast_path import fold_frozen_batch_norm
from sparseinst_cli.inference.winograd import (
    MIN_CHANNELS,
    MIN_TILES,
    WinogradConv2d,
    is_winograd_eligible,
    tile_transforms,
    transform_kernel,
    use_winograd,
    winograd_conv3x3,
)

# Relative to the output's largest magnitude: fp32 rounding of the tile transforms (F(4, 3)'s
# interpolation points reach 8, so errors are a few times those of a direct convolution).
WINOGRAD_RTOL = 5e-5


def direct_and_winograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    input_transform, output_transform = tile_transforms(x.device)
    actual = winograd_conv3x3(x, transform_kernel(weight), bias, input_transform, output_transform)
    return F.conv2d(x, weight, bias, padding=1), actual


@pytest.mark.parametrize("shape", [(2, 5, 7, 10), (1, 3, 1, 1), (1, 8, 4, 4), (1, 6, 9, 5), (3, 16, 13, 17)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_equals_the_direct_convolution(shape: tuple[int, int, int, int], with_bias: bool) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    n, c, h, w = shape
    x = torch.randn(shape, generator=generator)
    weight = torch.randn(11, c, 3, 3, generator=generator)
    bias = torch.randn(11, generator=generator) if with_bias else None
    expected, actual = direct_and_winograd(x, weight, bias)
    assert actual.shape == (n, 11, h, w)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    assert float((actual - expected).abs().max()) < WINOGRAD_RTOL * float(expected.abs().max())


def test_channels_last_input_gives_the_same_result() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 19, 23, generator=generator)
    weight, bias = torch.randn(32, 24, 3, 3, generator=generator), torch.randn(32, generator=generator)
    _, from_nchw = direct_and_winograd(x, weight, bias)
    _, from_nhwc = direct_and_winograd(x.contiguous(memory_format=torch.channels_last), weight, bias)
    assert torch.equal(from_nchw, from_nhwc)


def test_only_wide_dense_3x3_stride_1_convolutions_are_eligible() -> None:
    wide = MIN_CHANNELS
    assert is_winograd_eligible(nn.Conv2d(wide, wide, 3, padding=1))
    assert not is_winograd_eligible(nn.Conv2d(wide // 2, wide, 3, padding=1))  # too narrow
    assert is_winograd_eligible(nn.Conv2d(4, 4, 3, padding=1), min_channels=4)
    assert not is_winograd_eligible(nn.Conv2d(wide, wide, 3, stride=2, padding=1))
    assert not is_winograd_eligible(nn.Conv2d(wide, wide, 3, padding=2, dilation=2))
    assert not is_winograd_eligible(nn.Conv2d(wide, wide, 3, padding=1, groups=4))
    assert not is_winograd_eligible(nn.Conv2d(wide, wide, 1))
    assert not is_winograd_eligible(nn.Conv2d(wide, wide, 3, padding=1, padding_mode="reflect"))
    norm_conv = ConvNorm(wide, wide, 3)
    assert not is_winograd_eligible(norm_conv)  # its batch norm is not folded yet
    fold_frozen_batch_norm(norm_conv)
    assert is_winograd_eligible(norm_conv)

    class Scaled(nn.Conv2d):  # a plugin's convolution that does more than convolve
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    assert not is_winograd_eligible(Scaled(wide, wide, 3, padding=1))


def test_wrapped_convolution_falls_back_outside_fp32_cpu_inference() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    wrapped = WinogradConv2d(conv)
    x = torch.randn(1, 8, 20, 20)
    with torch.no_grad():
        direct = conv(x)
        fast = wrapped(x)
        assert fast.is_contiguous(memory_format=torch.channels_last)  # the Winograd path ran
        assert float((fast - direct).abs().max()) < WINOGRAD_RTOL * float(direct.abs().max())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert wrapped(x).dtype == torch.bfloat16  # the wrapped convolution ran, under autocast
        doubled = copy.deepcopy(wrapped).double()
        assert torch.equal(doubled(x.double()), doubled.conv(x.double()))
    assert torch.equal(wrapped(x), conv(x))  # with gradients: the direct convolution, differentiable
    with torch.no_grad():
        tiny = torch.randn(1, 8, 4 * 3, 4 * 5)  # 15 tiles
        assert 3 * 5 < MIN_TILES and torch.equal(wrapped(tiny), conv(tiny))


def test_deformable_offset_goes_to_the_wrapped_convolution() -> None:
    torch.manual_seed(0)
    conv = ConvNorm(8, 8, 3)
    fold_frozen_batch_norm(conv)
    wrapped = WinogradConv2d(conv)
    x, offset = torch.randn(1, 8, 9, 9), torch.randn(1, 18, 9, 9)
    with torch.no_grad():
        assert torch.equal(wrapped(x, offset), conv(x, offset))
        assert torch.allclose(wrapped(x, None), conv(x), rtol=0, atol=WINOGRAD_RTOL * float(conv(x).abs().max()))


def test_use_winograd_wraps_each_eligible_convolution_once() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1)),
        nn.Conv2d(16, 16, 3, padding=1),
    )
    assert use_winograd(model, min_channels=16) == 2
    assert isinstance(model[1][0], WinogradConv2d) and isinstance(model[2], WinogradConv2d)
    assert type(model[0]) is nn.Conv2d and type(model[1][2]) is nn.Conv2d
    assert use_winograd(model, min_channels=16) == 0  # already wrapped
