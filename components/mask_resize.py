"""Masks at image size at memory speed, bit for bit what ``F.interpolate`` + threshold gives (SPEC 1.5).

Post-processing resizes each mask probability map twice with bilinear interpolation (to the
padded input, then, after cropping, to the original image size) and thresholds it. A bilinear
value is a convex combination of the low-resolution values it depends on, so wherever all of
them lie on the same side of the threshold (by a margin far above the arithmetic's rounding),
the pixel's answer is known without interpolating; only pixels near a mask's boundary need the
arithmetic, and there it is done exactly as PyTorch's CPU kernel does it (the same source
positions, weights and fused multiply-adds), so the masks are identical. Boxes are collected
while the masks are written.

The kernel is compiled with numba and runs on CPU tensors; ``resize_and_threshold`` returns
``None`` (the caller then uses the reference) on other devices, without numba, for outputs that
PyTorch resizes with its other kernel (height + width <= 128), or when the one-off self-check
against ``F.interpolate`` fails on this machine.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Certain pixels lie this far from the threshold at every value they depend on; the two resizes'
# rounding moves a value by under 1e-6 (a few float32 ulps of numbers <= 1).
CERTAINTY_MARGIN = 1e-5
# PyTorch resizes outputs with height + width <= 128 by its channels-last kernel, whose rounding
# differs; those are small enough for the reference.
SMALL_OUTPUT = 128


def resize_and_threshold(
    probs: Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    original_size: tuple[int, int],
    threshold: float,
) -> tuple[Tensor, Tensor] | None:
    """Masks and boxes equal to ``reference_resize_and_threshold``'s, or ``None`` where the kernel
    does not apply.

    Args:
        probs: (K, h, w) float32 mask probabilities at the decoder's resolution.
        input_size: (H, W) of the padded input, the first resize's size.
        image_size: (h, w) of the resized image inside the padding (the crop).
        original_size: (height, width) of the image; the second resize's size.
    Returns:
        masks (K, height, width) bool and boxes (K, 4) float (x0, y0, x1, y1, exclusive ends).
    """
    second = tuple(image_size) != tuple(original_size)
    if (probs.device.type != "cpu" or probs.dtype != torch.float32 or sum(input_size) <= SMALL_OUTPUT
            or (second and sum(original_size) <= SMALL_OUTPUT) or not kernel_agrees_with_torch()):
        return None
    return _run_kernel(probs, input_size, image_size, original_size, threshold)


def reference_resize_and_threshold(
    probs: Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    original_size: tuple[int, int],
    threshold: float,
) -> Tensor:
    """The definition: resize to the padded input, crop, resize to the original size, threshold."""
    h, w = image_size
    resized = F.interpolate(probs.unsqueeze(1), size=tuple(input_size), mode="bilinear", align_corners=False)
    if (h, w) != tuple(original_size):
        resized = F.interpolate(resized[..., :h, :w], size=tuple(original_size), mode="bilinear", align_corners=False)
        return resized.squeeze(1) > threshold
    return (resized.squeeze(1) > threshold)[:, :h, :w]  # a same-size resize is the identity


def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear source indices and weights along one axis (align_corners=False):
    ``src = max(scale * (i + 0.5) - 0.5, 0)`` in float32 with ``scale = n_in / n_out``; returns
    (index0, index1, weight0, weight1) for each output position."""
    scale = np.float32(np.float32(n_in) / np.float32(n_out))
    centers = np.arange(n_out, dtype=np.float64) + 0.5
    # One rounding, as the fused multiply-add in PyTorch's kernel: the float64 product is exact.
    source = np.maximum((np.float64(scale) * centers - 0.5).astype(np.float32), np.float32(0))
    index0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    weight1 = np.clip(source - index0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    # An axis that keeps its size is copied: PyTorch reads no neighbour there (a NaN neighbour
    # times weight 0 would be NaN).
    index1 = index0 + (index0 < n_in - 1) if n_in != n_out else index0
    return index0, index1, (np.float32(1) - weight1).astype(np.float32), weight1


def _run_kernel(probs, input_size, image_size, original_size, threshold):
    kernel = _compiled_kernel()
    count, low_h, low_w = probs.shape
    (input_h, input_w), (crop_h, crop_w), (out_h, out_w) = input_size, image_size, original_size
    rows = [table[:crop_h] for table in axis_weights(low_h, input_h)]
    cols = [table[:crop_w] for table in axis_weights(low_w, input_w)]
    if tuple(image_size) != tuple(original_size):
        second_rows, second_cols = axis_weights(crop_h, out_h), axis_weights(crop_w, out_w)
        # The low-resolution span each output position depends on through both resizes.
        row_first, row_last = rows[0][second_rows[0]], rows[1][second_rows[1]]
        col_first, col_last = cols[0][second_cols[0]], cols[1][second_cols[1]]
    else:
        second_rows = second_cols = tuple(np.zeros(0, table.dtype) for table in rows)
        row_first, row_last, col_first, col_last = rows[0], rows[1], cols[0], cols[1]
    # numpy asks the OS for huge pages on large arrays: a third of torch.empty's page-fault time.
    masks = np.empty((count, out_h, out_w), np.bool_)
    boxes = np.zeros((count, 4), np.float32)
    if count == 0:
        return torch.from_numpy(masks), torch.from_numpy(boxes)
    # Output column c depends on low-resolution column x when column_start[x] <= c < column_start[x + 1].
    column_start = np.searchsorted(col_first, np.arange(low_w + 1)).astype(np.int64)
    window = (int((row_last - row_first).max()) + 1, int((col_last - col_first).max()) + 1)
    arguments = (np.ascontiguousarray(probs.numpy()), *rows, *cols, *second_rows, *second_cols,
                 row_first.astype(np.int64), column_start, *window,
                 np.float32(threshold), np.float32(CERTAINTY_MARGIN), masks, boxes)
    workers = min(torch.get_num_threads(), count)
    if workers == 1:
        kernel(0, 1, *arguments)
    else:
        list(_pool(workers).map(lambda worker: kernel(worker, workers, *arguments), range(workers)))
    return torch.from_numpy(masks), torch.from_numpy(boxes)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="mask-resize")
        return _pools[workers]


@functools.cache
def kernel_agrees_with_torch() -> bool:
    """Whether the kernel reproduces ``F.interpolate`` bit for bit here, checked once on mask-like
    and random maps with both one and two resizes (at threshold 0.5: half the random values lie
    near it). False also when numba is missing."""
    try:
        _compiled_kernel()
    except ImportError:
        return False
    generator = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.randn(1, 6, 24, 40, generator=generator) * 6, 5, 1, 2)[0].sigmoid()
    probs = torch.cat([smooth, torch.rand(2, 24, 40, generator=generator)])
    for original in ((90, 151), (133, 217), (61, 97)):
        masks, boxes = _run_kernel(probs, (96, 160), (90, 151), original, 0.5)
        expected = reference_resize_and_threshold(probs, (96, 160), (90, 151), original, 0.5)
        if not torch.equal(masks, expected):
            return False
    return True


@functools.cache
def _compiled_kernel():
    from .mask_kernel import resize_threshold_masks  # numba compiles on first use (cached on disk)

    return resize_threshold_masks
