"""``sparseinst data convert``: COCO instances JSON from the formats labeling tools and other
trainers write.

- ``yolo``: Ultralytics segmentation labels, one ``LABELS/STEM.txt`` per image, a line per
  instance: ``class x1 y1 x2 y2 ...`` normalized to [0, 1]; class names from the data YAML
  (``names:`` as a list or a mapping) or a names file (one per line). YOLO polygons have no
  holes, and a multi-part object is one polygon joined by thin bridges, so a converted mask is
  what the YOLO file draws, no more.
- ``labelme``: one LabelMe JSON per image (``shapes`` with ``label``, ``points``,
  ``shape_type`` polygon/rectangle/circle, ``group_id``): shapes sharing a label and a group id
  are one multi-part object.
- ``masks``: instance-mask PNGs, one per image with the image's stem, each object a distinct
  value (0 is background), as in PennFudan-style sets: every object becomes an RLE mask, so
  holes and multi-part objects survive exactly; all objects take one class (``class_name``).

Polygons are kept as COCO polygons (several per object when it has several parts); masks as
compressed RLE. Areas and boxes are computed from the masks with pycocotools.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..defaults import SourceFormat
from ..errors import DatasetError
from ..files import not_found, refuse_existing, refuse_overwriting, write_json
from .coco import encode_rle, segmentation_rle
from .datasets import segmentation_problem
from .images import IMAGE_SUFFIXES, files_under, header_size

CIRCLE_POINTS = 32  # vertices of the polygon that stands for a LabelMe circle
YOLO_LINE_MIN_NUMBERS = 7  # a class and three points


@dataclass
class Conversion:
    out: Path
    images: int = 0
    instances: int = 0
    categories: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per input left out, with why
    notes: list[str] = field(default_factory=list)  # what the format cannot express


def convert_dataset(source_format: str | SourceFormat, source: Path, out: Path, *, images: Path | None = None,
                    names: Path | None = None, class_name: str = "object", overwrite: bool = False) -> Conversion:
    """Write the COCO instances JSON of ``source`` (a YOLO labels folder, a LabelMe folder or an
    instance-mask folder) to ``out``; ``images`` is the image folder (LabelMe: default
    ``source``), whose relative paths become the ``file_name`` s. An existing ``out`` is
    refused unless ``overwrite``."""
    source_format, source = SourceFormat(source_format), Path(source)
    if not source.is_dir():
        raise DatasetError(not_found(source, "folder"))
    # Never one of the files it reads (a LabelMe JSON, the names file), --overwrite or not.
    refuse_overwriting([out], [*files_under(source, (".json",)), *([names] if names is not None else [])])
    refuse_existing([Path(out)], overwrite)
    builder = _CocoBuilder(Conversion(Path(out)))
    if source_format == SourceFormat.yolo:
        if images is None or names is None:
            raise DatasetError("yolo: give the image folder (--images) and the class names (--names, a data YAML "
                               "or a names file)")
        _from_yolo(builder, source, Path(images), yolo_names(Path(names)))
    elif source_format == SourceFormat.labelme:
        _from_labelme(builder, source, Path(images) if images is not None else source)
    else:
        if images is None:
            raise DatasetError("masks: give the image folder (--images)")
        _from_masks(builder, source, Path(images), class_name)
    return builder.write()


def yolo_names(path: Path) -> list[str]:
    """Class names from an Ultralytics data YAML (``names:`` list or {index: name}) or a plain
    file of one name per line."""
    if not path.is_file():
        raise DatasetError(not_found(path, "names file"))
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            names = (yaml.safe_load(text) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as error:
            raise DatasetError(f"{path}: not a data YAML with 'names' ({str(error).splitlines()[0]})") from None
        if isinstance(names, dict):
            names = [names[key] for key in sorted(names)]
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{path}: 'names' must be a list or a mapping of class index to name")
        return [str(name) for name in names]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: no class names")
    return names


class _CocoBuilder:
    def __init__(self, report: Conversion) -> None:
        self.report = report
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.category_ids: dict[str, int] = {}

    def category(self, name: str) -> int:
        return self.category_ids.setdefault(name, len(self.category_ids) + 1)

    def image(self, file_name: str, height: int, width: int) -> int:
        self.images.append({"id": len(self.images) + 1, "file_name": file_name, "height": height, "width": width})
        return len(self.images)

    def instance(self, image_id: int, category: str, segmentation: list | dict, height: int, width: int) -> None:
        """One object, checked as the COCO reader checks it (finite coordinates, near the image),
        whatever format it came from: a bad vertex is one skipped object, never a hang."""
        problem = segmentation_problem(segmentation, height, width)
        if problem:
            self.report.skipped.append(f"image {self.images[image_id - 1]['file_name']!r}: a {category!r} object: "
                                       f"{problem}")
            return
        rle = segmentation_rle(segmentation, height, width)
        area = float(mask_utils.area(rle))
        if area == 0:
            self.report.skipped.append(f"image {self.images[image_id - 1]['file_name']!r}: an empty {category!r} "
                                       f"object")
            return
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                 "category_id": self.category(category), "segmentation": segmentation,
                                 "area": area, "bbox": [round(v, 2) for v in mask_utils.toBbox(rle).tolist()],
                                 "iscrowd": 0})

    def write(self) -> Conversion:
        if not self.images:
            raise DatasetError("nothing to convert: no images with labels found" + (
                f" ({'; '.join(self.report.skipped[:3])})" if self.report.skipped else ""))
        categories = [{"id": cid, "name": name} for name, cid in self.category_ids.items()]
        write_json(self.report.out, {"images": self.images, "annotations": self.annotations, "categories": categories},
                   indent=None)
        self.report.images, self.report.instances = len(self.images), len(self.annotations)
        self.report.categories = list(self.category_ids)
        return self.report


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(not_found(folder, "image folder"))
    return files_under(folder, IMAGE_SUFFIXES)


def _size(path: Path) -> tuple[int, int] | None:
    size = header_size(path)
    if size is None:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        size = None if image is None else image.shape[:2]
    return size


def _from_yolo(builder: _CocoBuilder, labels: Path, images: Path, names: list[str]) -> None:
    for name in names:
        builder.category(name)  # every class, in the YAML's order, even one without instances
    for path in _image_files(images):
        label_file = labels / path.relative_to(images).with_suffix(".txt")
        size = _size(path)
        if size is None:
            builder.report.skipped.append(f"{path}: not a readable image")
            continue
        height, width = size
        image_id = builder.image(path.relative_to(images).as_posix(), height, width)
        lines = label_file.read_text().splitlines() if label_file.is_file() else []
        for number, line in enumerate(lines, start=1):
            values = line.split()
            if not values:
                continue
            problem = _yolo_problem(values, len(names))
            if problem:
                builder.report.skipped.append(f"{label_file}:{number}: {problem}")
                continue
            xy = np.asarray(values[1:], dtype=float).reshape(-1, 2) * (width, height)
            builder.instance(image_id, names[int(values[0])], [np.round(xy, 2).flatten().tolist()], height, width)
    for label_file in files_under(labels, (".txt",)):
        stem = label_file.relative_to(labels).with_suffix("")
        if not any((images / stem).with_suffix(suffix).is_file() for suffix in _suffix_spellings()):
            builder.report.skipped.append(f"{label_file}: no image {stem}.* in {images} (its labels are left out)")
    builder.report.notes.append("YOLO polygons hold no holes, and a multi-part object is one polygon: the masks "
                                "are what the YOLO files draw")


def _yolo_problem(values: list[str], classes: int) -> str | None:
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "not numbers"
    if len(numbers) < YOLO_LINE_MIN_NUMBERS or len(numbers) % 2 == 0:
        return "expected a class and at least three x y pairs"
    if not numbers[0].is_integer() or not 0 <= numbers[0] < classes:
        return f"class {values[0]} is not one of the {classes} names"
    if not all(math.isfinite(v) and -0.01 <= v <= 1.01 for v in numbers[1:]):
        return "coordinates must be normalized to [0, 1]"
    return None


def _from_labelme(builder: _CocoBuilder, folder: Path, images: Path) -> None:
    for path in files_under(folder, (".json",)):
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as error:
            builder.report.skipped.append(f"{path}: not UTF-8 text (byte {error.start}); LabelMe writes UTF-8")
            continue
        except json.JSONDecodeError as error:
            builder.report.skipped.append(f"{path}: not valid JSON ({error.msg} at line {error.lineno})")
            continue
        try:
            file_name, height, width = str(record["imagePath"]), int(record["imageHeight"]), int(record["imageWidth"])
            shapes = record["shapes"]
        except (KeyError, TypeError, ValueError, OverflowError):
            builder.report.skipped.append(f"{path}: not a LabelMe file (needs imagePath, imageHeight, imageWidth, "
                                          f"shapes)")
            continue
        if height < 1 or width < 1:
            builder.report.skipped.append(f"{path}: imageHeight and imageWidth must be positive ({height}x{width})")
            continue
        image_path = (path.parent / file_name).resolve()
        if not image_path.is_file():
            builder.report.skipped.append(f"{path}: its image {file_name!r} is not at {image_path}")
            continue
        try:
            relative = image_path.relative_to(images.resolve()).as_posix()
        except ValueError:
            relative = Path(file_name).name
        image_id = builder.image(relative, height, width)
        objects: dict[tuple, list[list[float]]] = {}
        for position, shape in enumerate(shapes if isinstance(shapes, list) else []):
            polygon = _labelme_polygon(shape)
            if polygon is None:
                kind = shape.get("shape_type", "polygon") if isinstance(shape, dict) else "?"
                builder.report.skipped.append(f"{path}: shape #{position} ({kind}) is not an area")
                continue
            group = shape.get("group_id")
            key = (shape["label"], group if group is not None else f"shape {position}")
            objects.setdefault(key, []).append(polygon)
        for (label, _), polygons in objects.items():
            builder.instance(image_id, str(label), polygons, height, width)


def _labelme_polygon(shape: object) -> list[float] | None:
    if not isinstance(shape, dict) or "label" not in shape or not isinstance(shape.get("points"), list):
        return None
    try:
        points = np.asarray(shape["points"], dtype=float).reshape(-1, 2)
    except ValueError:
        return None
    kind = shape.get("shape_type") or "polygon"
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif kind == "circle" and len(points) == 2:
        center, edge = points
        radius = float(np.hypot(*(edge - center)))
        angles = np.linspace(0, 2 * np.pi, CIRCLE_POINTS, endpoint=False)
        points = center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif kind != "polygon" or len(points) < 3:
        return None
    return np.round(points, 2).flatten().tolist()


def _suffix_spellings() -> list[str]:
    return sorted({spelling for suffix in IMAGE_SUFFIXES for spelling in (suffix, suffix.upper())})


def _from_masks(builder: _CocoBuilder, masks: Path, images: Path, class_name: str) -> None:
    by_stem = {p.relative_to(masks).with_suffix("").as_posix(): p for p in _image_files(masks)}
    for other in sorted(p for p in masks.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES):
        builder.report.skipped.append(f"{other}: not an image, in the mask folder")
    image_files = _image_files(images)
    image_stems = {p.relative_to(images).with_suffix("").as_posix() for p in image_files}
    for stem, mask_path in by_stem.items():
        if stem not in image_stems:
            builder.report.skipped.append(f"{mask_path}: no image {stem}.* in {images} (its objects are left out)")
    builder.category(class_name)
    for path in image_files:
        relative = path.relative_to(images)
        mask_path = by_stem.get(relative.with_suffix("").as_posix())
        size = _size(path)
        if size is None:
            builder.report.skipped.append(f"{path}: not a readable image")
            continue
        if mask_path is None:
            builder.report.skipped.append(f"{path}: no mask PNG with its name in {masks}")
            continue
        ids = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if ids is None or ids.ndim != 2 or ids.shape != size:
            builder.report.skipped.append(f"{mask_path}: not a single-channel mask of the image's size {size}")
            continue
        image_id = builder.image(relative.as_posix(), *size)
        for value in _object_values(ids):
            builder.instance(image_id, class_name, encode_rle((ids == value).astype(np.uint8)), *size)


def _object_values(ids: np.ndarray) -> Iterable[int]:
    return (int(v) for v in np.unique(ids) if v != 0)
