"""Training augmentation (SPEC 2) and batch collation.

All randomness comes from the ``numpy.random.Generator`` passed in, so ``(index, seed)`` fixes a
training sample exactly, whichever worker makes it; this is what lets training resume mid-epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ImageError
from ..recipe import AugmentationSection, InputSection
from . import polygons
from .datasets import CocoInstances, Sample
from .images import pad_batch, resized_shape

MAX_SUBSTITUTES = 8  # unreadable images in a row that TrainingSet steps over before giving up


class TrainSample(NamedTuple):
    image: Tensor  # (3, h, w) uint8 RGB, augmented
    masks: Tensor  # (K, h, w) uint8 in {0, 1}
    labels: Tensor  # (K,) int64
    image_id: int
    skipped: tuple[str, ...] = ()  # unreadable images stepped over to make this sample (one message each)


class TrainBatch(NamedTuple):
    images: Tensor  # (B, 3, Hp, Wp) float32, normalized, zero-padded bottom/right to size_divisibility
    masks: list[Tensor]  # B × (K_i, Hp, Wp) uint8, zero-padded like the images
    labels: list[Tensor]  # B × (K_i,) int64
    image_sizes: list[tuple[int, int]]  # (h, w) of each image inside the padding
    image_ids: list[int]
    skipped: tuple[str, ...] = ()  # unreadable images stepped over while making this batch

    def to(self, device: str | torch.device) -> TrainBatch:
        """The batch on ``device`` (non-blocking copies: pin memory in the DataLoader to overlap them)."""
        return self._replace(
            images=self.images.to(device, non_blocking=True),
            masks=[m.to(device, non_blocking=True) for m in self.masks],
            labels=[label.to(device, non_blocking=True) for label in self.labels],
        )


class TrainTransform:
    """SparseInst's training augmentation, as in the authors' detectron2 dataset mapper.

    1. Only with ``crop`` and then with probability ``crop_prob``: resize the shorter side to a
       choice of ``crop_resize_sizes`` (detectron2's ``ResizeShortestEdge(..., "choice")`` with
       no cap on the longer side), then crop a window of height and width each drawn uniformly
       from ``crop_size_range`` (clipped to the image), at a uniform position
       (``RandomCrop("absolute_range")``).
    2. Resize the shorter side to a choice of ``min_sizes``, the longer side at most ``max_size``
       (``resized_shape``: detectron2's rounding).
    3. With ``flip``, mirror horizontally with probability 0.5. Detectron2 flips first; flipping
       commutes with resizing and the crop position is uniform, so the distribution is the same,
       and flipping last touches fewer pixels.

    Images are resized with ``cv2.INTER_AREA`` when shrinking and ``INTER_LINEAR`` when enlarging
    (close to detectron2's PIL bilinear, which filters when shrinking, and to inference's
    antialiased resize). Polygon annotations move with the image (scaled, clipped to the crop,
    mirrored) and are rasterized at the final size, as detectron2 does; RLE masks are resized
    with nearest-neighbour sampling at pixel centres (PIL's ``NEAREST``, as detectron2 resizes
    bitmasks). Instances whose mask becomes empty are dropped.
    """

    def __init__(self, augmentation: AugmentationSection) -> None:
        self.flip = augmentation.flip
        self.min_sizes = tuple(augmentation.min_sizes)
        self.max_size = augmentation.max_size
        self.crop = augmentation.crop
        self.crop_prob = augmentation.crop_prob
        self.crop_resize_sizes = tuple(augmentation.crop_resize_sizes)
        self.crop_size_range = tuple(augmentation.crop_size_range)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> TrainSample:
        image, masks, labels = sample.image, sample.masks, sample.labels
        outlines = {k: polygons.as_arrays(parts) for k, parts in enumerate(sample.polygons) if parts is not None}
        if self.crop and rng.random() < self.crop_prob:
            short = self.crop_resize_sizes[rng.integers(len(self.crop_resize_sizes))]
            image, masks, outlines = resize(image, masks, resized_shape(*image.shape[:2], short, sys.maxsize), outlines)
            image, masks, outlines = random_crop(image, masks, self.crop_size_range, rng, outlines)
        short = self.min_sizes[rng.integers(len(self.min_sizes))]
        image, masks, outlines = resize(image, masks, resized_shape(*image.shape[:2], short, self.max_size), outlines)
        if self.flip and rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            outlines = {k: polygons.flip(parts, image.shape[1]) for k, parts in outlines.items()}
        if outlines:
            masks = np.array(masks)  # a copy to draw into
            for k, parts in outlines.items():
                masks[k] = polygons.rasterize(parts, *image.shape[:2])
        masks, labels = drop_empty(masks, labels)
        return TrainSample(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            masks=torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
            labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            image_id=sample.image_id,
        )


Outlines = dict[int, polygons.Polygons]  # instance index -> its polygon parts, in the image's coordinates


def resize(image: np.ndarray, masks: np.ndarray, size: tuple[int, int],
           outlines: Outlines | None = None) -> tuple[np.ndarray, np.ndarray, Outlines]:
    """Image (H, W, 3), masks (K, H, W) and polygon outlines resized to ``size`` = (h, w)."""
    outlines = outlines or {}
    height, width = image.shape[:2]
    new_h, new_w = size
    if (new_h, new_w) == (height, width):
        return image, masks, outlines
    interpolation = cv2.INTER_AREA if new_h * new_w < height * width else cv2.INTER_LINEAR
    image = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    rows = _nearest_indices(height, new_h)
    cols = _nearest_indices(width, new_w)
    outlines = {k: polygons.scale(parts, new_w / width, new_h / height) for k, parts in outlines.items()}
    return image, masks.take(rows, axis=1).take(cols, axis=2), outlines


def _nearest_indices(old: int, new: int) -> np.ndarray:
    """Source index of each output pixel, sampled at pixel centres (PIL / cv2 INTER_NEAREST_EXACT)."""
    return np.minimum(((np.arange(new) + 0.5) * (old / new)).astype(np.int64), old - 1)


def random_crop(
    image: np.ndarray, masks: np.ndarray, size_range: tuple[int, int], rng: np.random.Generator,
    outlines: Outlines | None = None,
) -> tuple[np.ndarray, np.ndarray, Outlines]:
    """A window of absolute size drawn from ``size_range`` per side (clipped to the image), uniform
    position; polygon outlines are clipped to it."""
    height, width = image.shape[:2]
    low, high = size_range
    crop_h = int(rng.integers(min(height, low), min(height, high) + 1))
    crop_w = int(rng.integers(min(width, low), min(width, high) + 1))
    top = int(rng.integers(height - crop_h + 1))
    left = int(rng.integers(width - crop_w + 1))
    outlines = {k: polygons.crop(parts, left, top, crop_w, crop_h) for k, parts in (outlines or {}).items()}
    return (image[top : top + crop_h, left : left + crop_w], masks[:, top : top + crop_h, left : left + crop_w],
            outlines)


def drop_empty(masks: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = masks.any(axis=(1, 2))
    return (masks, labels) if keep.all() else (masks[keep], labels[keep])


class TrainingSet(Dataset):
    """Augmented training samples: ``training_set[(index, seed)]``.

    The sample is ``transform(dataset.load(index), np.random.default_rng(seed))``, so a sampler
    that hands out ``(index, seed)`` pairs fixes every sample exactly. When the image is
    unreadable or cannot be augmented: with ``strict`` an ImageError is raised; otherwise the next
    indices are tried in turn (same seed, at most ``MAX_SUBSTITUTES``) and each error message,
    which names the file, is recorded in the sample's ``skipped`` for the main process to report,
    so that a run always gets past a bad image.
    """

    def __init__(self, dataset: CocoInstances, transform: TrainTransform, strict: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.strict = strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> TrainSample:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"TrainingSet keys are (index, seed) pairs, not {key!r}")
        index, seed = key
        skipped: list[str] = []
        for attempt in range(min(MAX_SUBSTITUTES, len(self.dataset))):
            position = (index + attempt) % len(self.dataset)
            try:
                sample = self.dataset.load(position)
                augmented = self.transform(sample, np.random.default_rng(seed))
            except (ImageError, ValueError, cv2.error) as exc:
                if self.strict:
                    raise ImageError(_one_line(exc, self.dataset.image_info(position).file_name)) from None
                skipped.append(_one_line(exc, self.dataset.image_info(position).file_name))
                continue
            return augmented._replace(skipped=tuple(skipped))
        raise ImageError(f"{len(skipped)} images in a row are unreadable; the first: {skipped[0]}")


def _one_line(exc: Exception, file_name: str) -> str:
    """The error as one line that names the image."""
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return message if isinstance(exc, ImageError) else f"{file_name}: cannot be augmented ({message})"


def collate(
    samples: Sequence[TrainSample],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisibility: int,
) -> TrainBatch:
    """Normalize, then zero-pad images and masks bottom/right to a common multiple of ``size_divisibility``."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
    images = pad_batch([(s.image.float() - mean) / std for s in samples], size_divisibility)
    height, width = images.shape[-2:]
    masks = [F.pad(s.masks, (0, width - s.masks.shape[2], 0, height - s.masks.shape[1])) for s in samples]
    return TrainBatch(
        images=images,
        masks=masks,
        labels=[s.labels for s in samples],
        image_sizes=[(int(s.image.shape[1]), int(s.image.shape[2])) for s in samples],
        image_ids=[s.image_id for s in samples],
        skipped=tuple(name for s in samples for name in s.skipped),
    )


class Collate:
    """``collate`` with the recipe's input settings, picklable for DataLoader workers."""

    def __init__(self, input_section: InputSection) -> None:
        self.pixel_mean = tuple(input_section.pixel_mean)
        self.pixel_std = tuple(input_section.pixel_std)
        self.size_divisibility = input_section.size_divisibility

    def __call__(self, samples: Sequence[TrainSample]) -> TrainBatch:
        return collate(samples, self.pixel_mean, self.pixel_std, self.size_divisibility)
