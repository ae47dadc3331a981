"""The compiled kernel of ``mask_resize``: threshold(resize(resize(probs))) with the certain pixels
filled and only the pixels near the threshold interpolated, exactly as PyTorch's CPU kernel does.

Imported on first use (numba compiles it once and caches the machine code on disk).
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def fused_multiply_add(typing_context, a, b, c):
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return signature, codegen


jit = numba.njit(nogil=True, cache=True)  # nogil: mask_resize runs it on several threads
inline = numba.njit(inline="always")  # helpers: inlined into the kernel, no call overhead per pixel


@inline
def lerp(low, high, weight_low, weight_high):
    # PyTorch's kernel computes t0 * w0 + t1 * w1; the compiler fuses the first product.
    return fused_multiply_add(low, weight_low, high * weight_high)


@inline
def fill(row, start, end, value):
    for c in range(start, end):
        row[c] = value


@inline
def first_resize(p, y, x, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1):
    top = lerp(p[ty0[y], tx0[x]], p[ty0[y], tx1[x]], tw0[x], tw1[x])
    bottom = lerp(p[ty1[y], tx0[x]], p[ty1[y], tx1[x]], tw0[x], tw1[x])
    return lerp(top, bottom, th0[y], th1[y])


@inline
def fill_first_resize_row(cache, slot, y, lo, hi, p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1):
    for x in range(lo, hi):
        cache[slot, x] = first_resize(p, y, x, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)


@inline
def cached_row(y, other, lo, hi, cache, slot_row, slot_lo, slot_hi, p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1):
    """The cache slot holding first-resize row ``y`` over columns [lo, hi), computing what is
    missing; a new row takes the slot not holding row ``other``."""
    slot = 0 if slot_row[0] == y else (1 if slot_row[1] == y else -1)
    if slot < 0:
        slot = 0 if slot_row[0] != other else 1
        slot_row[slot], slot_lo[slot], slot_hi[slot] = y, lo, lo
    if lo < slot_lo[slot]:
        fill_first_resize_row(cache, slot, y, lo, slot_lo[slot], p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
        slot_lo[slot] = lo
    if hi > slot_hi[slot]:
        fill_first_resize_row(cache, slot, y, slot_hi[slot], hi, p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
        slot_hi[slot] = hi
    return slot


@jit
def resize_threshold_masks(worker, workers, probs, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1,
                           sy0, sy1, sh0, sh1, sx0, sx1, sw0, sw1, row_first, column_start,
                           window_h, window_w, threshold, margin, masks, boxes):
    """Masks ``worker``, ``worker + workers``, ... of ``probs`` (K, h, w) into ``masks`` (K, H, W) and
    their boxes into ``boxes`` (K, 4).

    ``t*`` are the first resize's source rows/columns and weights over the crop, ``s*`` the
    second's over the output (empty: no second resize). Output pixel (r, c) depends only on the
    low-resolution window of ``window_h`` x ``window_w`` values at (``row_first[r]``, x), where
    x is the low-resolution column with ``column_start[x] <= c < column_start[x + 1]``.
    """
    low_h, low_w = probs.shape[1], probs.shape[2]
    out_h, out_w = masks.shape[1], masks.shape[2]
    second = sy0.size > 0
    above, below = threshold + margin, threshold - margin
    safe = np.empty((low_h, low_w), np.float32)
    window_min = np.empty((low_h, low_w), np.float32)
    window_max = np.empty((low_h, low_w), np.float32)
    # Per low-resolution row y: runs of output columns [run_start, run_end) whose windows are
    # certainly below (0), certainly above (1) or near the threshold (2: interpolated).
    run_start = np.zeros((low_h, low_w + 2), np.int64)
    run_end = np.zeros((low_h, low_w + 2), np.int64)
    run_status = np.zeros((low_h, low_w + 2), np.int8)
    run_count = np.zeros(low_h, np.int64)
    uncertain_from = np.zeros(low_h, np.int64)  # the output columns holding the row's status-2 runs
    uncertain_to = np.zeros(low_h, np.int64)
    # The second resize reads two rows of first-resize values: two cached rows, each valid over
    # the columns [slot_lo, slot_hi) that the uncertain pixels so far needed.
    cache = np.empty((2, tx0.size), np.float32)
    slot_row = np.full(2, -1, np.int64)
    slot_lo = np.zeros(2, np.int64)
    slot_hi = np.zeros(2, np.int64)
    for k in range(worker, probs.shape[0], workers):
        p = probs[k]
        # The certainty test reads NaN as -1: a NaN is never "above", and where it makes a window
        # "below", the reference gives False too (NaN > threshold is False). The active rectangle
        # holds every value reaching the lower margin.
        active_top, active_bottom, active_left, active_right = low_h, -1, low_w, -1
        for y in range(low_h):
            row_max = np.float32(-1)
            for x in range(low_w):
                value = p[y, x]
                value = value if value == value else np.float32(-1)
                safe[y, x] = value
                row_max = value if value > row_max else row_max
            if row_max >= below:
                active_top, active_bottom = min(active_top, y), y
                x = 0
                while safe[y, x] < below:
                    x += 1
                active_left = min(active_left, x)
                x = low_w - 1
                while safe[y, x] < below:
                    x -= 1
                active_right = max(active_right, x)
        run_count[:] = 0
        if active_bottom < 0:
            for r in range(out_h):
                fill(masks[k, r], 0, out_w, False)
            continue
        # Windows that reach the active rectangle start up to window - 1 before it.
        y_from, x_from = max(active_top - window_h + 1, 0), max(active_left - window_w + 1, 0)
        x_to = min(active_right + window_w, low_w)  # windows starting up to active_right read these
        for y in range(y_from, active_bottom + 1):
            for x in range(x_from, x_to):
                window_min[y, x] = window_max[y, x] = safe[y, x]
            for yy in range(y + 1, min(y + window_h, low_h)):
                for x in range(x_from, x_to):
                    value = safe[yy, x]
                    window_min[y, x] = value if value < window_min[y, x] else window_min[y, x]
                    window_max[y, x] = value if value > window_max[y, x] else window_max[y, x]
        for y in range(y_from, active_bottom + 1):
            run_start[y, 0], run_end[y, 0], run_status[y, 0] = 0, column_start[x_from], 0
            runs, uncertain_from[y], uncertain_to[y] = 1, out_w, 0
            for x in range(x_from, active_right + 1):
                low, high = window_min[y, x], window_max[y, x]
                for xx in range(x + 1, min(x + window_w, x_to)):
                    low, high = min(low, window_min[y, xx]), max(high, window_max[y, xx])
                state = 1 if low > above else (0 if high < below else 2)
                start, end = column_start[x], column_start[x + 1]
                if run_status[y, runs - 1] == state:
                    run_end[y, runs - 1] = end
                else:
                    run_start[y, runs], run_end[y, runs], run_status[y, runs] = start, end, state
                    runs += 1
                if state == 2 and end > start:
                    uncertain_from[y], uncertain_to[y] = min(uncertain_from[y], start), end
            run_start[y, runs], run_end[y, runs], run_status[y, runs] = column_start[active_right + 1], out_w, 0
            run_count[y] = runs + 1
        slot_row[:] = -1
        x_min, x_max, y_min, y_max = out_w, -1, out_h, -1
        for r in range(out_h):
            row = masks[k, r]
            y = row_first[r]
            if run_count[y] == 0:
                fill(row, 0, out_w, False)
                continue
            slot0 = slot1 = 0
            if second and uncertain_to[y] > uncertain_from[y]:
                lo, hi = sx0[uncertain_from[y]], sx1[uncertain_to[y] - 1] + 1
                slot0 = cached_row(sy0[r], sy1[r], lo, hi, cache, slot_row, slot_lo, slot_hi,
                                   p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
                slot1 = cached_row(sy1[r], sy0[r], lo, hi, cache, slot_row, slot_lo, slot_hi,
                                   p, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
            first, last = -1, -1
            for i in range(run_count[y]):
                start, end, state = run_start[y, i], run_end[y, i], run_status[y, i]
                if state == 0:
                    fill(row, start, end, False)
                    continue
                if state == 1:
                    fill(row, start, end, True)
                    first = start if first < 0 else first
                    last = end - 1
                    continue
                for c in range(start, end):
                    if second:
                        top = lerp(cache[slot0, sx0[c]], cache[slot0, sx1[c]], sw0[c], sw1[c])
                        bottom = lerp(cache[slot1, sx0[c]], cache[slot1, sx1[c]], sw0[c], sw1[c])
                        value = lerp(top, bottom, sh0[r], sh1[r])
                    else:
                        value = first_resize(p, r, c, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
                    inside = value > threshold
                    row[c] = inside
                    if inside:
                        first = c if first < 0 else first
                        last = c
            if first >= 0:
                x_min, x_max = min(x_min, first), max(x_max, last)
                y_min, y_max = min(y_min, r), r
        if y_max >= 0:
            boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3] = x_min, y_min, x_max + 1, y_max + 1
