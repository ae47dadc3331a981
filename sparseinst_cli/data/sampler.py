"""The order in which training sees its images: a deterministic, endless stream.

Global position ``p`` (0, 1, 2, ... over all processes) is image ``perm_e[p % n]`` of epoch
``e = p // n``, augmented with a seed derived from (seed, p). Optimizer step ``s`` consumes
positions ``[s * B, (s + 1) * B)`` for a global batch of B images, so the step alone fixes where
the data stands: resuming at step ``s`` continues the exact same stream, and a run on 2 processes
sees the same images with the same augmentation as a run on 1.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

SampleKey = tuple[int, int]  # (dataset index, augmentation seed)


def sample_key(position: int, size: int, seed: int) -> SampleKey:
    epoch, offset = divmod(position, size)
    index = _permutation(size, seed, epoch)[offset]
    augmentation_seed = int(np.random.SeedSequence([seed, position]).generate_state(1)[0])
    return int(index), augmentation_seed


_cache: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    key = (size, seed, epoch)
    if key not in _cache:
        _cache.clear()  # one epoch at a time
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _cache[key] = torch.randperm(size, generator=generator).numpy()
    return _cache[key]


class TrainingStream(Sampler[SampleKey]):
    """Keys for one process, micro-batch after micro-batch, from global position ``start``.

    Each global micro-batch of ``per_process * world_size`` positions is split in contiguous
    slices, slice ``rank`` for this process.
    """

    def __init__(self, size: int, *, seed: int, start: int, per_process: int, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.start = size, seed, start
        self.per_process, self.rank, self.world_size = per_process, rank, world_size

    def __iter__(self) -> Iterator[SampleKey]:
        position = self.start
        while True:
            first = position + self.rank * self.per_process
            for offset in range(self.per_process):
                yield sample_key(first + offset, self.size, self.seed)
            position += self.per_process * self.world_size
