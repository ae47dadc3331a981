"""Reading images and finding them on disk."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class ImageError(ValueError):
    """An image that is missing or cannot be decoded."""


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
