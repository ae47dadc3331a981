"""Reading images and finding them on disk."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..errors import ImageError
from ..files import atomic_write
from ..progress import SILENT, Progress

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
TYPICAL_ASPECT = 4 / 3  # landscape, as COCO's typical 640 x 853 test image
MAX_IMAGE_PIXELS = 1 << 27  # 134 M pixels (e.g. 11585 x 11585): decoding more could exhaust memory
MAX_PIXELS_VARIABLE = "SPARSEINST_MAX_IMAGE_PIXELS"


ImageInput = np.ndarray | Image.Image | str | Path  # an image as the predictors take it: array, PIL image or path

def max_image_pixels() -> int:
    """The largest image (height x width) read, ``SPARSEINST_MAX_IMAGE_PIXELS`` or the default."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_IMAGE_PIXELS


def header_size(source: Path | bytes) -> tuple[int, int] | None:
    """(height, width) from an image file's header (a path, or its bytes), without decoding it;
    None if Pillow cannot tell."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is checked by the caller
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.height, image.width
    except (OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 array (H, W, 3); grayscale and alpha images are converted. Images larger than
    ``max_image_pixels()`` are refused from their header, before decoding."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.is_dir() else f"{path}: is a folder, not an image")
    raw = path.read_bytes()  # read once: the header check and the decoder share it
    size = header_size(raw)
    if size is not None and size[0] * size[1] > max_image_pixels():
        raise ImageError(f"{path}: {size[0]}x{size[1]} is larger than the {max_image_pixels():,} pixels read at most "
                         f"(raise it with the environment variable {MAX_PIXELS_VARIABLE})")
    data = np.frombuffer(raw, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as exc:
        raise ImageError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or min(image.shape[:2]) == 0:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


def read_skipping(items: Iterable[Item], read: Callable[[Item], Loaded], skipped: list[str],
                  progress: Progress = SILENT) -> Iterator[tuple[Item, Loaded]]:
    """``(item, read(item))`` for each item that reads (an image path with ``read_image``, a
    dataset index with ``CocoInstances.load``...). An unreadable one (``ImageError``) is skipped:
    its message goes to ``skipped`` and to ``progress`` ("skipped: MESSAGE"), where it counts as
    done at once; the caller advances ``progress`` for the items it gets."""
    for item in items:
        try:
            loaded = read(item)
        except ImageError as exc:
            skipped.append(str(exc))
            progress.note(f"skipped: {exc}")
            progress.advance()
            continue
        yield item, loaded


def as_rgb_array(image: np.ndarray | Image.Image | str | Path, bgr: bool = False) -> np.ndarray:
    """An image given as a path, a PIL image or a uint8 array (H, W, 3), RGB, or BGR with ``bgr``
    (OpenCV's frames; also (H, W) grayscale and (H, W, 4) with alpha) -> a writable RGB uint8
    array (H, W, 3). Read-only arrays are copied, not refused."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image array, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) == 0:
        raise ImageError(f"expected an image array of shape (H, W, 3), got {image.shape}")
    image = image[:, :, 2::-1] if bgr else image[:, :, :3]
    return np.ascontiguousarray(image) if image.flags.writeable else np.array(image)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"{path}: cannot encode image")
    atomic_write(path, encoded.tofile)


def files_under(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files below ``folder`` (recursively, sorted) whose suffix is one of ``suffixes`` (any case)."""
    suffixes = frozenset(suffixes)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (recursively, sorted) in folders; plus problems."""
    found: list[Path] = []
    problems: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = files_under(item, IMAGE_SUFFIXES)
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
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))  # a 1 x 4000 strip keeps one row


def typical_size(short_side: int, max_side: int) -> tuple[int, int]:
    """(h, w) of a typical (4:3 landscape) image resized to ``short_side``, the longer side at most
    ``max_side``: the size timing and export use when no image is given."""
    return short_side, min(max_side, round(short_side * TYPICAL_ASPECT))


def pad_batch(images: Sequence[Tensor], divisibility: int) -> Tensor:
    """Stack (3, h, w) tensors, zero-padded bottom/right to a common multiple of ``divisibility``."""
    height = math.ceil(max(t.shape[1] for t in images) / divisibility) * divisibility
    width = math.ceil(max(t.shape[2] for t in images) / divisibility) * divisibility
    return torch.stack([F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in images])
