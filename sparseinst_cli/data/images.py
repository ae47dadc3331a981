"""Reading images and finding them on disk."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
TYPICAL_ASPECT = 4 / 3  # landscape, as COCO's typical 640 x 853 test image


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 array (H, W, 3); grayscale and alpha images are converted."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"{path}: cannot encode image")
    encoded.tofile(path)


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (recursively, sorted) in folders; plus problems."""
    found: list[Path] = []
    problems: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                problems.append(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(images)
        elif item.exists():
            found.append(item)
        else:
            problems.append(f"{item}: no such file or folder")
    return found, problems


def resized_shape(height: int, width: int, short_side: int, max_side: int) -> tuple[int, int]:
    """Scale so the shorter side is ``short_side`` unless the longer would pass ``max_side``.

    The arithmetic follows detectron2's ResizeShortestEdge step by step, so rounding matches
    the authors' evaluation exactly.
    """
    scale = short_side / min(height, width)
    new_h, new_w = (short_side, scale * width) if height < width else (scale * height, short_side)
    if max(new_h, new_w) > max_side:
        scale = max_side / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def typical_size(short_side: int, max_side: int) -> tuple[int, int]:
    """(h, w) of a typical (4:3 landscape) image resized to ``short_side``, the longer side at most
    ``max_side``: the size timing and export use when no image is given."""
    return short_side, min(max_side, round(short_side * TYPICAL_ASPECT))


def pad_batch(images: Sequence[Tensor], divisibility: int) -> Tensor:
    """Stack (3, h, w) tensors, zero-padded bottom/right to a common multiple of ``divisibility``."""
    height = math.ceil(max(t.shape[1] for t in images) / divisibility) * divisibility
    width = math.ceil(max(t.shape[2] for t in images) / divisibility) * divisibility
    return torch.stack([F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in images])
