"""A deterministic synthetic shapes dataset (COCO JSON + PNG) that a small model learns on a CPU.

Each image is a smooth textured background with 0–6 filled shapes (circle, triangle, square,
star) in colors drawn independently of the class, so the shape alone decides the label. Shapes
are painted in order; an earlier shape's annotated mask is what the later ones leave visible.
Every image comes from its own random stream, derived from ``(seed, split, index)``, so any
image can be rendered alone (:func:`render_image`) and the splits are independent.

Layout written by :func:`generate_demo_dataset`::

    out/train.json  out/train/000000.png ...
    out/val.json    out/val/000000.png ...
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..defaults import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES
from ..errors import DatasetError
from ..files import output_folder, write_json
from ..progress import SILENT, Progress
from .coco import encode_rle, segmentation_rle
from .images import write_image

DEMO_CLASSES: tuple[str, ...] = ("circle", "triangle", "square", "star")
DEMO_SIZE: tuple[int, int] = (256, 256)  # (H, W)
DEMO_DESCRIPTION = "SparseInst synthetic shapes"  # marks the JSON files demo-data wrote (and may rewrite)
SPLITS: dict[str, int] = {"train": 0, "val": 1}  # split name -> code in the random stream's key

# Image index i is empty when i % EMPTY_PERIOD == EMPTY_OFFSET: ~3% of images, and any split of
# at least EMPTY_OFFSET + 1 (= 17) images holds one.
EMPTY_PERIOD = 32
EMPTY_OFFSET = 16
MAX_OBJECTS = 6
SMALL_FRACTION = 0.2  # share of shapes drawn small
SMALL_RADIUS = (7.0, 11.0)  # circumradius in pixels: ~12–20 px across
LARGE_RADIUS = (14.0, 56.0)  # log-uniform
EDGE_MARGIN = 0.7  # a center stays this many radii inside the image (large shapes may be clipped)
PLACEMENT_TRIES = 12
MIN_VISIBLE_AREA = 30  # pixels; an instance with less left visible is dropped
MIN_VISIBLE_FRACTION = 0.35  # a new shape may not hide more than 65% of an earlier one
MIN_CONTRAST = 90.0  # RGB distance between a shape's color and the background under it
COLOR_TRIES = 8
SHADING = 25.0  # +- change of a shape's color across its extent
POLYGON_MIN_IOU = 0.9  # below this a polygon does not represent the mask: write RLE instead
SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision
POLYGON_UPSAMPLE = 2  # contours are traced at twice the resolution (see segmentation)


@dataclass(frozen=True)
class RenderedImage:
    """One image and its instances.

    image: (H, W, 3) uint8 RGB. masks: (N, H, W) bool, what each shape leaves visible (annotated).
    labels: (N,) int64 in [0, C), indices into DEMO_CLASSES. shape_areas: (N,) int64, each shape's
    area in the image before later shapes covered it (>= masks.sum((1, 2))).
    """

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    shape_areas: np.ndarray


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated dataset lies, with its image and instance counts."""

    root: Path
    train_json: Path
    val_json: Path
    train_dir: Path
    val_dir: Path
    train_images: int
    val_images: int
    train_instances: int
    val_instances: int
    class_names: tuple[str, ...] = DEMO_CLASSES


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image; independent across seeds, splits and indices."""
    return np.random.default_rng([seed, SPLITS[split], index])


def _shape_vertices(label: int, radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon (K, 2) of one shape centered at the origin, in pixels."""
    name = DEMO_CLASSES[label]
    if name == "circle":
        theta = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
        radii = np.full_like(theta, radius)
    elif name == "triangle":
        theta = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        radii = np.full(3, radius)
    elif name == "square":
        theta = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, radius)
    else:  # star: five points, inner radius ~0.45
        theta = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.4, 0.5))
    return np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)


def _shape_mask(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random shape of class ``label`` as a bool mask (H, W)."""
    height, width = size
    small = rng.random() < SMALL_FRACTION
    radius = rng.uniform(*SMALL_RADIUS) if small else float(np.exp(rng.uniform(*np.log(LARGE_RADIUS))))
    radius = min(radius, 0.45 * min(height, width))
    center = rng.uniform(EDGE_MARGIN * radius, [width - EDGE_MARGIN * radius, height - EDGE_MARGIN * radius])
    points = _shape_vertices(label, radius, rng.uniform(0, 2 * np.pi), rng) + center
    fixed = np.round(points * (1 << SUBPIXEL_BITS)).astype(np.int32)
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return mask.astype(bool)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth textured background (H, W, 3) float32: noise, gradient or stripes."""
    height, width = size
    low, high = rng.uniform(40, 215, (2, 3))
    kind = rng.integers(3)
    if kind == 0:  # smooth noise
        cells = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9)), 1)).astype(np.float32)
        weight = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    else:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        along = xs * np.cos(angle) + ys * np.sin(angle)
        if kind == 1:  # linear gradient
            weight = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        else:  # soft stripes
            weight = 0.5 + 0.5 * np.sin(along * 2 * np.pi / rng.uniform(10, 40))
        weight = weight[..., None]
    return (low + (high - low) * np.clip(weight, 0, 1)).astype(np.float32)


def _paint(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``mask`` on ``canvas`` (H, W, 3) float32 with a gently shaded color that stands out."""
    under = canvas[mask].mean(axis=0)
    candidates = rng.uniform(0, 255, (COLOR_TRIES, 3))
    distance = np.linalg.norm(candidates - under, axis=1)
    enough = np.flatnonzero(distance >= MIN_CONTRAST)
    color = candidates[enough[0] if enough.size else np.argmax(distance)]
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (along - along.mean()) / max(float(np.ptp(along)), 1.0) * 2 * SHADING
    canvas[ys, xs] = color + ramp[:, None]


def render_image(seed: int, split: str, index: int, size: tuple[int, int] = DEMO_SIZE) -> RenderedImage:
    """One image of the dataset with the visible masks it is annotated with, rendered alone."""
    rng = image_rng(seed, split, index)
    canvas = _background(size, rng)
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    labels: list[int] = []
    count = 0 if index % EMPTY_PERIOD == EMPTY_OFFSET else int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(count):
        label = int(rng.integers(len(DEMO_CLASSES)))
        for _ in range(PLACEMENT_TRIES):
            mask = _shape_mask(label, size, rng)
            left = [v & ~mask for v in visible]
            if all(l.sum() >= max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * f.sum()) for l, f in zip(left, full)):
                break
        else:
            continue  # no placement leaves the earlier shapes recognizable: skip this one
        _paint(canvas, mask, rng)
        visible = left + [mask]
        full.append(mask)
        labels.append(label)
    keep = [i for i, v in enumerate(visible) if v.sum() >= MIN_VISIBLE_AREA]
    masks = np.stack([visible[i] for i in keep]) if keep else np.zeros((0, *size), bool)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return RenderedImage(image, masks, np.array([labels[i] for i in keep], np.int64),
                         np.array([full[i].sum() for i in keep], np.int64))


def segmentation(mask: np.ndarray) -> list[list[float]] | dict:
    """COCO segmentation of a bool mask (H, W): outer polygons when they rasterize back to the mask
    (IoU >= POLYGON_MIN_IOU) and it has no holes; otherwise compressed RLE.

    Contours are traced on the mask upsampled POLYGON_UPSAMPLE times, so vertices lie a fraction of
    a pixel inside the pixel outline and pycocotools' rasterization gives back the boundary pixels
    (tracing pixel centers would lose half of them: IoU ~0.85 on small shapes).
    """
    scale = POLYGON_UPSAMPLE
    fine = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(fine, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0, :, 3] >= 0).any():
        return encode_rle(mask)  # empty, or holes that outer polygons cannot express
    polygons = [((c.reshape(-1) + 0.5) / scale).tolist() for c in contours if len(c) >= 3]
    if not polygons:
        return encode_rle(mask)
    height, width = mask.shape
    drawn = mask_utils.decode(segmentation_rle(polygons, height, width)).astype(bool)
    iou = (drawn & mask).sum() / max((drawn | mask).sum(), 1)
    return polygons if iou >= POLYGON_MIN_IOU else encode_rle(mask)


def annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> dict:
    """A COCO annotation for one visible mask (H, W); category ids are ``label + 1``."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {"id": ann_id, "image_id": image_id, "category_id": label + 1, "segmentation": segmentation(mask),
            "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0}


def _write_split(out: Path, split: str, count: int, seed: int, size: tuple[int, int],
                 advance: Callable[[], None]) -> int:
    """Render and write one split's images and JSON; the number of instances."""
    images, annotations = [], []
    (out / split).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rendered = render_image(seed, split, index, size)
        file_name = f"{index:06d}.png"
        write_image(out / split / file_name, rendered.image)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]})
        for mask, label in zip(rendered.masks, rendered.labels):
            annotations.append(annotation(mask, int(label), image_id, len(annotations) + 1))
        advance()
    coco = {
        "info": {"description": DEMO_DESCRIPTION, "split": split, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(DEMO_CLASSES)],
    }
    write_json(out / f"{split}.json", coco, indent=None)
    return len(annotations)


def _refuse_other_data(out: Path) -> None:
    """Stop before overwriting a dataset that demo-data did not write (a user's own files)."""
    for split in ("train", "val"):
        path = out / f"{split}.json"
        if not path.exists():
            continue
        try:
            info = json.loads(path.read_text()).get("info", {})
        except (OSError, ValueError, AttributeError):
            info = {}
        if not isinstance(info, dict) or info.get("description") != DEMO_DESCRIPTION:
            raise DatasetError(f"{path}: exists and was not written by demo-data; choose another folder",
                               setting="out")


def generate_demo_dataset(out: Path, *, train_images: int = DEMO_TRAIN_IMAGES, val_images: int = DEMO_VAL_IMAGES,
                          size: tuple[int, int] = DEMO_SIZE, seed: int = 0,
                          progress: Progress = SILENT) -> DemoDataset:
    """Write the synthetic dataset under ``out``; the same arguments give byte-identical files.

    ``progress`` advances after every image (both splits together). Existing files are
    overwritten; files from an earlier, larger generation are left in place but not listed in
    the JSON.
    """
    out = output_folder(Path(out))
    _refuse_other_data(out)
    progress.start("demo-data", train_images + val_images)
    train_instances = _write_split(out, "train", train_images, seed, size, progress.advance)
    val_instances = _write_split(out, "val", val_images, seed, size, progress.advance)
    progress.stop()
    return DemoDataset(root=out, train_json=out / "train.json", val_json=out / "val.json",
                       train_dir=out / "train", val_dir=out / "val", train_images=train_images,
                       val_images=val_images, train_instances=train_instances, val_instances=val_instances)
