"""Training augmentation (SPEC 2) and batch collation.

All randomness comes from the ``rng`` a sample is transformed with, itself seeded by the
training stream, so a run (and its resume) reproduces exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import CocoInstances, Sample
from .images import ImageError, resized_shape
from .inference import pad_batch
from .recipe import AugmentationSection, InputSection

SUBSTITUTE_TRIES = 10
UNCAPPED = 10**6  # the crop's first resize has no cap on the longer side


class TrainSample(NamedTuple):
    image: Tensor  # (3, h, w) uint8 RGB
    masks: Tensor  # (K, h, w) uint8
    labels: Tensor  # (K,) int64
    image_id: int
    skipped: tuple[str, ...] = ()  # unreadable images this sample stands in for


class TrainTransform:
    """Optional crop, multi-scale resize, horizontal flip."""

    def __init__(self, augmentation: AugmentationSection) -> None:
        self.spec = augmentation

    def __call__(self, sample: Sample, rng: np.random.Generator) -> TrainSample:
        image, masks, labels = sample.image, sample.masks, sample.labels
        spec = self.spec
        if spec.crop and rng.random() < spec.crop_prob:
            shorter = int(rng.choice(spec.crop_resize_sizes))
            image, masks = _resize(image, masks, resized_shape(*image.shape[:2], shorter, UNCAPPED))
            image, masks = _random_crop(image, masks, spec.crop_size_range, rng)
        shorter = int(rng.choice(spec.min_sizes))
        image, masks = _resize(image, masks, resized_shape(*image.shape[:2], shorter, spec.max_size))
        if spec.flip and rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        keep = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, dtype=bool)
        return TrainSample(
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            torch.from_numpy(np.ascontiguousarray(masks[keep])),
            torch.from_numpy(np.asarray(labels)[keep].astype(np.int64)),
            sample.image_id,
        )


def _resize(image: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    if (height, width) == image.shape[:2]:
        return image, masks
    shrinking = height * width < image.shape[0] * image.shape[1]
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if len(masks):
        masks = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST) for m in masks])
    else:
        masks = np.zeros((0, height, width), dtype=np.uint8)
    return image, masks


def _random_crop(image: np.ndarray, masks: np.ndarray, size_range: Sequence[int],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An absolute-size crop, height and width each uniform in ``size_range``, clipped to the image."""
    height, width = image.shape[:2]
    crop_h = min(height, int(rng.integers(size_range[0], size_range[1] + 1)))
    crop_w = min(width, int(rng.integers(size_range[0], size_range[1] + 1)))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return image[top:top + crop_h, left:left + crop_w], masks[:, top:top + crop_h, left:left + crop_w]


class TrainingSet(Dataset):
    """``dataset[(index, seed)]``: image ``index`` augmented with ``np.random.default_rng(seed)``.

    An unreadable image is replaced by the next readable one and named in ``skipped``
    (or raises, with ``strict``).
    """

    def __init__(self, dataset: CocoInstances, transform: TrainTransform, strict: bool = False) -> None:
        self.dataset, self.transform, self.strict = dataset, transform, strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> TrainSample:
        index, seed = key
        skipped: list[str] = []
        for attempt in range(SUBSTITUTE_TRIES):
            try:
                sample = self.dataset.load((index + attempt) % len(self.dataset))
            except ImageError as exc:
                if self.strict:
                    raise
                skipped.append(str(exc))
                continue
            return self.transform(sample, np.random.default_rng(seed))._replace(skipped=tuple(skipped))
        raise ImageError(f"{SUBSTITUTE_TRIES} unreadable images in a row, the last: {skipped[-1]}")


class TrainBatch(NamedTuple):
    images: Tensor  # (B, 3, Hp, Wp) float32, normalized, zero-padded to a multiple of size_divisibility
    masks: list[Tensor]  # (K_i, Hp, Wp) uint8, padded like the images
    labels: list[Tensor]  # (K_i,) int64
    image_sizes: list[tuple[int, int]]
    image_ids: list[int]
    skipped: tuple[str, ...] = ()

    def to(self, device: torch.device | str) -> TrainBatch:
        return self._replace(
            images=self.images.to(device, non_blocking=True),
            masks=[m.to(device, non_blocking=True) for m in self.masks],
            labels=[t.to(device, non_blocking=True) for t in self.labels],
        )


class Collate:
    """Normalize, then zero-pad images and masks to a common size (picklable for workers)."""

    def __init__(self, spec: InputSection) -> None:
        self.mean = torch.tensor(spec.pixel_mean).view(3, 1, 1)
        self.std = torch.tensor(spec.pixel_std).view(3, 1, 1)
        self.divisibility = spec.size_divisibility

    def __call__(self, samples: Sequence[TrainSample]) -> TrainBatch:
        images = pad_batch([(s.image.float() - self.mean) / self.std for s in samples], self.divisibility)
        height, width = images.shape[-2:]
        masks = [torch.nn.functional.pad(s.masks, (0, width - s.masks.shape[-1], 0, height - s.masks.shape[-2]))
                 for s in samples]
        return TrainBatch(
            images, masks, [s.labels for s in samples], [tuple(s.image.shape[-2:]) for s in samples],
            [s.image_id for s in samples], tuple(name for s in samples for name in s.skipped),
        )
