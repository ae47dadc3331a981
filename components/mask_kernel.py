"""The compiled kernel of ``mask_resize``: threshold(resize(resize(probs))) with the certain pixels
filled and only the pixels near the threshold interpolated, exactly as PyTorch's CPU kernel does.

PyTorch's bilinear kernel interpolates along x in the two source rows an output row reads, then
between them along y. Output rows that share their certain pixels share their uncertain columns
too, so the source rows interpolated along x are kept and reused by the next output rows.

Hot loops index slices from 0: numba wraps negative indices, and only indices it knows to be
non-negative leave loops the compiler can vectorize.

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
def copy(row, source):
    for c in range(source.size):
        row[c] = source[c]


@inline
def first_resize(p, y, x, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1):
    top = lerp(p[ty0[y], tx0[x]], p[ty0[y], tx1[x]], tw0[x], tw1[x])
    bottom = lerp(p[ty1[y], tx0[x]], p[ty1[y], tx1[x]], tw0[x], tw1[x])
    return lerp(top, bottom, th0[y], th1[y])


@inline
def window_states(safe, row_min, y, x_from, x_last, x_to, window_h, window_w, above, below,
                  column_min, column_max, window_min, window_max, state):
    """``state[x]`` for x in [x_from, x_last]: whether the window of ``safe`` at (y, x) lies certainly
    below (0), certainly above (1) or near the threshold (2). Separable minima and maxima."""
    y_end = min(y + window_h, safe.shape[0])
    states = state[x_from:x_last + 1]
    if row_min[y:y_end].min() > above:  # rows entirely inside the mask
        fill(states, 0, states.size, 1)
        return
    low, high, values = column_min[x_from:x_to], column_max[x_from:x_to], safe[y, x_from:x_to]
    for i in range(values.size):
        low[i] = high[i] = values[i]
    for yy in range(y + 1, y_end):
        values = safe[yy, x_from:x_to]
        for i in range(values.size):
            value = values[i]
            low[i] = value if value < low[i] else low[i]
            high[i] = value if value > high[i] else high[i]
    window_low, window_high = window_min[x_from:x_last + 1], window_max[x_from:x_last + 1]
    for i in range(states.size):
        window_low[i], window_high[i] = low[i], high[i]
    for offset in range(1, window_w):
        for i in range(min(states.size, low.size - offset)):
            value = low[i + offset]
            window_low[i] = value if value < window_low[i] else window_low[i]
            value = high[i + offset]
            window_high[i] = value if value > window_high[i] else window_high[i]
    for i in range(states.size):
        states[i] = 1 if window_low[i] > above else (0 if window_high[i] < below else 2)


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
    # The last resize's source rows and weights along y, and what it reads along x.
    last_y0, last_y1, last_h0, last_h1 = (sy0, sy1, sh0, sh1) if second else (ty0, ty1, th0, th1)
    above, below = threshold + margin, threshold - margin
    safe = np.empty((low_h, low_w), np.float32)
    row_min = np.empty(low_h, np.float32)
    column_min, column_max = np.empty(low_w, np.float32), np.empty(low_w, np.float32)
    window_min, window_max = np.empty(low_w, np.float32), np.empty(low_w, np.float32)
    # Output rows sharing a low-resolution row y share their certain pixels: a template row holds
    # them, and only the runs of output columns [uncertain_start, uncertain_end) are interpolated.
    state = np.empty(low_w, np.int8)  # per window: 0 certainly below, 1 certainly above, 2 near
    template = np.empty(out_w, np.bool_)
    uncertain_start = np.empty(low_w, np.int64)
    uncertain_end = np.empty(low_w, np.int64)
    # Source rows of the last resize interpolated along x over the uncertain runs; source row j
    # lives in slot j % 2 (the two rows an output row reads are adjacent or one row).
    rows, row_held = np.empty((2, out_w), np.float32), np.full(2, -1, np.int64)
    first_row = np.empty(tx0.size, np.float32)  # a row of the first resize (second resize only)
    for k in range(worker, probs.shape[0], workers):
        p = probs[k]
        # The certainty test reads NaN as -1: a NaN is never "above", and where it makes a window
        # "below", the reference gives False too (NaN > threshold is False). The active rectangle
        # holds every value reaching the lower margin.
        active_top, active_bottom, active_left, active_right = low_h, -1, low_w, -1
        for y in range(low_h):
            values, safe_values = p[y], safe[y]
            low, high = np.float32(2), np.float32(-1)
            for x in range(low_w):
                value = values[x]
                value = value if value == value else np.float32(-1)
                safe_values[x] = value
                low = value if value < low else low
                high = value if value > high else high
            row_min[y] = low
            if high >= below:
                active_top, active_bottom = min(active_top, y), y
                x = 0
                while safe_values[x] < below:
                    x += 1
                active_left = min(active_left, x)
                x = low_w - 1
                while safe_values[x] < below:
                    x -= 1
                active_right = max(active_right, x)
        if active_bottom < 0:
            for r in range(out_h):
                fill(masks[k, r], 0, out_w, False)
            continue
        # Windows that reach the active rectangle start up to window - 1 before it.
        y_from, x_from = max(active_top - window_h + 1, 0), max(active_left - window_w + 1, 0)
        x_to = min(active_right + window_w, low_w)  # windows starting up to active_right read these
        template_y, uncertain_runs, certain_first, certain_last = -1, 0, -1, -1
        x_min, x_max, y_min, y_max = out_w, -1, out_h, -1
        for r in range(out_h):
            row = masks[k, r]
            y = row_first[r]
            if y < y_from or y > active_bottom:
                fill(row, 0, out_w, False)
                continue
            if y != template_y:
                template_y, uncertain_runs, certain_first, certain_last = y, 0, -1, -1
                row_held[:] = -1
                window_states(safe, row_min, y, x_from, active_right, x_to, window_h, window_w, above, below,
                              column_min, column_max, window_min, window_max, state)
                fill(template, 0, column_start[x_from], False)
                fill(template, column_start[active_right + 1], out_w, False)
                begin = x_from
                for x in range(x_from + 1, active_right + 2):
                    if x <= active_right and state[x] == state[begin]:
                        continue
                    start, end = column_start[begin], column_start[x]
                    if end > start:
                        if state[begin] == 2:
                            uncertain_start[uncertain_runs], uncertain_end[uncertain_runs] = start, end
                            uncertain_runs += 1
                        elif state[begin] == 1:
                            fill(template, start, end, True)
                            certain_first = start if certain_first < 0 else certain_first
                            certain_last = end - 1
                        else:
                            fill(template, start, end, False)
                    begin = x
            copy(row, template)
            if uncertain_runs == 0:
                if certain_first >= 0:
                    x_min, x_max = min(x_min, certain_first), max(x_max, certain_last)
                    y_min, y_max = min(y_min, r), r
                continue
            for source in (last_y0[r], last_y1[r]):
                slot = source % 2
                if row_held[slot] == source:
                    continue
                row_held[slot] = source
                for i in range(uncertain_runs):
                    start, end = uncertain_start[i], uncertain_end[i]
                    interpolated = rows[slot, start:end]
                    if second:
                        lo, hi = sx0[start], sx1[end - 1] + 1
                        for x in range(lo, hi):
                            first_row[x] = first_resize(p, source, x, ty0, ty1, th0, th1, tx0, tx1, tw0, tw1)
                        for c in range(start, end):
                            interpolated[c - start] = lerp(first_row[sx0[c]], first_row[sx1[c]], sw0[c], sw1[c])
                    else:
                        values = p[source]
                        for c in range(start, end):
                            interpolated[c - start] = lerp(values[tx0[c]], values[tx1[c]], tw0[c], tw1[c])
            first, last = certain_first, certain_last
            top, bottom = rows[last_y0[r] % 2], rows[last_y1[r] % 2]
            weight_top, weight_bottom = last_h0[r], last_h1[r]
            for i in range(uncertain_runs):
                start, end = uncertain_start[i], uncertain_end[i]
                run, run_top, run_bottom = row[start:end], top[start:end], bottom[start:end]
                for c in range(run.size):
                    run[c] = lerp(run_top[c], run_bottom[c], weight_top, weight_bottom) > threshold
                c = 0
                while c < run.size and not run[c]:
                    c += 1
                if c < run.size:
                    first = start + c if first < 0 or start + c < first else first
                    c = run.size - 1
                    while not run[c]:
                        c -= 1
                    last = max(last, start + c)
            if first >= 0:
                x_min, x_max = min(x_min, first), max(x_max, last)
                y_min, y_max = min(y_min, r), r
        if y_max >= 0:
            boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3] = x_min, y_min, x_max + 1, y_max + 1
