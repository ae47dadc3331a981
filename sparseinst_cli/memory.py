"""Keep freed memory for reuse, so that large tensors stop costing page faults on every pass.

glibc's malloc serves large blocks (from 128 KiB, rising to 32 MiB as such blocks are freed) with
fresh pages from the OS and returns them when they are freed, and it hands back the top of its heap
as soon as more than a small margin is free. Inference and training allocate and free the same
large activations on every pass, so every pass pays the kernel again to map and zero their pages:
on a 2-core cloud VM about a third of ``r50_giam``'s plain inference time at 640x853 (README:
Speed). Serving every block from the heap and never trimming it lets a pass reuse the memory the
previous one freed; the process keeps its peak memory instead of returning it between passes.

The ``sparseinst`` command does this at start-up (``SPARSEINST_MALLOC=system`` leaves glibc's
defaults); Python users call ``keep_freed_memory()`` once, or set ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment, or preload jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

OPT_OUT_VARIABLE = "SPARSEINST_MALLOC"  # "system": leave the C library's allocator as it is
# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int): trimming starts above 2 GiB free


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    Returns whether it applies: False with another C library (macOS, Windows, musl), when
    ``SPARSEINST_MALLOC=system`` is set, or when glibc refuses a setting. Process-wide and
    idempotent.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def freed_memory_kept() -> bool:
    """Whether ``keep_freed_memory`` has applied in this process (timings record it)."""
    return keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()
