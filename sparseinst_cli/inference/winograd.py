"""Winograd F(4x4, 3x3) convolution for fp32 CPU inference.

A 3x3 stride-1 convolution computes each 4x4 output tile from a 6x6 input tile. Winograd's minimal
filtering algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) does
it with 36 multiplications per channel pair instead of 144: input tiles and kernels move into a
transformed domain (``B^T d B`` and ``G g G^T``), where the convolution becomes 36 independent
matrix products over the channels, and the products move back (``A^T m A``).

On CPU the wide 3x3 convolutions of SparseInst (the decoder's 256-channel stacks, the encoder's
FPN outputs, ResNet stages 2-4) are compute-bound in oneDNN's direct convolution; this path runs
them 1.2-1.8x faster. In fp32 the outputs agree with the direct convolution to about 1e-5 relative.
Narrow convolutions stay direct: with few channels the tile transforms, which only move memory,
cost more than the products save; so do tiny inputs, where reading the transformed kernels does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.backbones import ConvNorm

OUTPUT_TILE = 4
INPUT_TILE = OUTPUT_TILE + 2  # a 3x3 kernel needs a one-pixel border around the output tile
MIN_CHANNELS = 128  # narrower convolutions are faster direct (measured on 2-core AVX-512 CPUs)
MIN_TILES = 16  # below this many output tiles, reading the 4x larger transformed kernel dominates

# Transform matrices for F(4, 3) with interpolation points 0, 1, -1, 2, -2 (Lavin & Gray, eq. 10-12).
_B_T = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_A_T = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
]


def transform_kernel(weight: Tensor) -> Tensor:
    """``(out, in, 3, 3)`` kernels as the 36 matrices ``(36, in, out)`` of the transformed domain."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    transformed = torch.einsum("ij,ocjl,ml->imco", g, weight.double(), g)  # G w G^T per channel pair
    return transformed.reshape(INPUT_TILE**2, weight.shape[1], weight.shape[0]).float().contiguous()


def tile_transforms(device: torch.device) -> tuple[Tensor, Tensor]:
    """``B^T (.) B`` and ``A^T (.) A`` on row-major flattened tiles, as (36, 36) and (16, 36) matrices."""
    b_t = torch.tensor(_B_T, dtype=torch.float64)
    a_t = torch.tensor(_A_T, dtype=torch.float64)
    return torch.kron(b_t, b_t).float().to(device), torch.kron(a_t, a_t).float().to(device)


def winograd_conv3x3(x: Tensor, kernel: Tensor, bias: Tensor | None,
                     input_transform: Tensor, output_transform: Tensor) -> Tensor:
    """3x3 convolution, stride 1, padding 1, of ``x`` (N, C, H, W) with transformed ``kernel``.

    Returns an NHWC-strided (channels-last) tensor, the layout the fast model runs in.
    """
    n, c, h, w = x.shape
    rows, cols = -(-h // OUTPUT_TILE), -(-w // OUTPUT_TILE)
    # NHWC, zero border of 1 plus whatever completes the last tiles.
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, OUTPUT_TILE * cols + 1 - w, 1, OUTPUT_TILE * rows + 1 - h))
    padded = padded.contiguous()
    s_n, s_h, s_w, s_c = padded.stride()
    tiles = padded.as_strided(  # (6, 6, N, rows, cols, C): overlapping 6x6 windows every 4 pixels
        (INPUT_TILE, INPUT_TILE, n, rows, cols, c),
        (s_h, s_w, s_n, OUTPUT_TILE * s_h, OUTPUT_TILE * s_w, s_c),
    )
    transformed = (input_transform @ tiles.reshape(INPUT_TILE**2, -1)).view(INPUT_TILE**2, -1, c)
    products = torch.bmm(transformed, kernel)  # (36, tiles, out)
    out_channels = kernel.shape[-1]
    y = (output_transform @ products.view(INPUT_TILE**2, -1)).view(
        OUTPUT_TILE, OUTPUT_TILE, n, rows, cols, out_channels)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, OUTPUT_TILE * rows, OUTPUT_TILE * cols, out_channels)[:, :h, :w]
    y = y + bias if bias is not None else y.contiguous()
    return y.permute(0, 3, 1, 2)


def is_winograd_eligible(conv: nn.Module, min_channels: int = MIN_CHANNELS) -> bool:
    """A plain ``nn.Conv2d`` or a folded ResNet ``ConvNorm``: 3x3, stride 1, padding 1, dense, wide enough."""
    if type(conv) is ConvNorm:
        if not isinstance(conv.norm, nn.Identity):
            return False  # batch norm not folded yet
    elif type(conv) is not nn.Conv2d:
        return False  # other subclasses may do more in forward than convolve
    return conv.padding_mode == "zeros" and (
        conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


class WinogradConv2d(nn.Module):
    """A 3x3 convolution run by :func:`winograd_conv3x3` for fp32 CPU inputs of ``MIN_TILES`` tiles
    or more.

    Anything else (CUDA, reduced precision or autocast, gradients, tiny inputs, extra arguments
    such as a deformable offset) goes to the wrapped convolution, which is kept as ``.conv``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("kernel", transform_kernel(conv.weight.detach()), persistent=False)
        input_transform, output_transform = tile_transforms(conv.weight.device)
        self.register_buffer("input_transform", input_transform, persistent=False)
        self.register_buffer("output_transform", output_transform, persistent=False)

    def forward(self, x: Tensor, *args: Tensor | None) -> Tensor:
        if any(a is not None for a in args) or not self._applies(x):
            return self.conv(x, *args)
        bias = None if self.conv.bias is None else self.conv.bias.detach()
        return winograd_conv3x3(x, self.kernel, bias, self.input_transform, self.output_transform)

    def _applies(self, x: Tensor) -> bool:
        n, _, h, w = x.shape
        return (
            x.device.type == "cpu" and x.dtype == torch.float32 and self.kernel.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled()
            and n * -(-h // OUTPUT_TILE) * -(-w // OUTPUT_TILE) >= MIN_TILES
        )


def use_winograd(model: nn.Module, min_channels: int = MIN_CHANNELS) -> int:
    """Wrap every eligible convolution of ``model`` in :class:`WinogradConv2d`, in place; returns
    how many. Call after folding batch norm: the transformed kernels are computed once, here."""
    wrapped = 0
    for parent in list(model.modules()):
        if isinstance(parent, WinogradConv2d):
            continue
        for name, child in list(parent.named_children()):
            if is_winograd_eligible(child, min_channels):
                setattr(parent, name, WinogradConv2d(child))
                wrapped += 1
    return wrapped
