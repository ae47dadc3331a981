"""Reading COCO instance-segmentation datasets (a JSON file and an image folder).

The JSON is parsed with plain ``json`` so that every problem can be reported by name: problems
that stop the run raise :class:`DatasetError`; a malformed annotation or an image whose file is
missing is skipped and listed in :attr:`CocoInstances.summary` (``strict=True`` raises instead).
Masks are decoded lazily, one image at a time, when :meth:`CocoInstances.load` is called.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from ..errors import DatasetError, ImageError
from ..files import not_found, read_json
from .coco import segmentation_rle
from .images import read_image

REQUIRED_KEYS = ("images", "annotations", "categories")
IMAGE_FIELDS = ("id", "file_name", "height", "width")
ANNOTATION_FIELDS = ("image_id", "category_id", "segmentation")
MIN_POLYGON_COORDS = 6  # three points; pycocotools reads a 4-number "polygon" as a box
POLYGON_REACH = 1.0  # vertices may lie this many image sizes outside the image (pycocotools crashes far out)


class Sample(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (K, H, W) uint8 in {0, 1}
    labels: np.ndarray  # (K,) int64 contiguous labels
    image_id: int
    file_name: str
    # Per instance: its COCO polygons (flat x, y lists) when the file gives polygons, None for an
    # RLE; training rasterizes polygons at the size it resizes to (empty: every mask is a raster).
    polygons: tuple[list[list[float]] | None, ...] = ()


class Issue(NamedTuple):
    """Something in a dataset that reading skipped or repaired: what, why, and of which kind."""

    name: str
    reason: str
    kind: str


# The kinds of issue, for reports that group them (sparseinst data check).
MALFORMED = "malformed entry"
MISSING_FIELD = "missing field"
INVALID_IMAGE_FIELDS = "invalid image fields"
DUPLICATE_IMAGE_ID = "duplicate image id"
MISSING_IMAGE_FILE = "image file not found"
UNKNOWN_IMAGE = "annotation of an unknown image"
UNKNOWN_CATEGORY = "unknown category"
INVALID_SEGMENTATION = "invalid segmentation"
RECOMPUTED_AREA_OR_BOX = "area or bbox recomputed"
DUPLICATE_ANNOTATION_ID = "duplicate annotation id"


class ImageInfo(NamedTuple):
    id: int
    file_name: str
    height: int
    width: int


@dataclass
class DatasetSummary:
    """What was kept and what was left out while reading a dataset."""

    images: int = 0  # usable images
    annotations: int = 0  # instances kept
    crowd: int = 0  # iscrowd=1 annotations, left out of the targets (kept for evaluation)
    empty_images: int = 0  # usable images without instances (kept)
    skipped_images: list[Issue] = field(default_factory=list)
    skipped_annotations: list[Issue] = field(default_factory=list)
    repaired_annotations: list[Issue] = field(default_factory=list)  # reason: what was recomputed
    noted_annotations: list[Issue] = field(default_factory=list)  # kept, but other COCO tools may stumble

    def problems(self) -> list[str]:
        """One line per skipped, repaired or noted image or annotation."""
        return ([f"skipped {i.name}: {i.reason}" for i in (*self.skipped_images, *self.skipped_annotations)]
                + [f"repaired {i.name}: {i.reason}" for i in self.repaired_annotations]
                + [f"noted {i.name}: {i.reason}" for i in self.noted_annotations])

    @property
    def issues(self) -> list[Issue]:
        """Every issue, skipped, repaired and noted."""
        return [*self.skipped_images, *self.skipped_annotations, *self.repaired_annotations, *self.noted_annotations]

    def __str__(self) -> str:
        return (
            f"{self.images} images ({self.empty_images} without instances), {self.annotations} instances; "
            f"left out: {self.crowd} crowd, {len(self.skipped_images)} images, "
            f"{len(self.skipped_annotations)} annotations"
        )


class CocoInstances(Dataset):
    """A COCO instances file and its image folder; ``dataset[i]`` is ``dataset.load(i)``.

    Category ids map to contiguous labels 0..C-1 in ascending id order. Images without
    annotations are kept (K = 0); crowd annotations are counted and left out. Images keep the
    order of the JSON's ``images`` list.

    Records are pickled into one byte buffer (as detectron2 does), so DataLoader workers forked
    from the main process share it instead of copying it page by page through refcounts.

    Without ``images`` only the annotations are read (image files are neither checked nor
    loaded): what evaluation needs. ``ground_truth()`` gives the annotations that passed, crowd
    regions included, as a COCO dict for pycocotools, so evaluation scores against exactly what
    this reader accepts. Training sets skip keeping them (``keep_ground_truth=False``): they
    would be copied into every DataLoader worker.
    """

    def __init__(self, annotations: str | Path, images: str | Path | None = None, *, strict: bool = False,
                 keep_ground_truth: bool = True) -> None:
        self.annotations_file = Path(annotations)
        self.image_root = Path(images) if images is not None else None
        self.strict = strict
        self.summary = DatasetSummary()
        self._evaluated: list[dict] | None = [] if keep_ground_truth else None  # accepted annotations, crowd too
        data = _read_json(self.annotations_file)
        if self.image_root is not None and not self.image_root.is_dir():
            raise DatasetError(f"{not_found(self.image_root, 'image folder')} (images of {self.annotations_file})")
        self.categories = self._read_categories(data["categories"])
        self.class_names: tuple[str, ...] = tuple(c["name"] for c in self.categories)
        records = self._read_images(data["images"])
        self._read_annotations(data["annotations"], records)
        usable = [r for r in records.values() if r is not None]
        if not usable:
            reasons = "; ".join(self.summary.problems()[:3])
            raise DatasetError(f"{self.annotations_file}: no usable images" + (f" ({reasons})" if reasons else ""))
        self.summary.images = len(usable)
        self.summary.annotations = sum(len(r["labels"]) for r in usable)
        self.summary.empty_images = sum(not r["labels"] for r in usable)
        self._buffer, self._ends = _serialize(
            (r["id"], r["file_name"], r["height"], r["width"], tuple(r["labels"]), r["segms"]) for r in usable
        )

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Sample:
        return self.load(index)

    def image_info(self, index: int) -> ImageInfo:
        """The image's id, file name and size from the JSON, without reading the image."""
        return ImageInfo(*self._record(index)[:4])

    def annotations_of(self, index: int) -> tuple[tuple[int, ...], list]:
        """The image's instances as read for training: contiguous labels and COCO segmentations."""
        return self._record(index)[4:6]

    def load(self, index: int) -> Sample:
        """The image (RGB) and its instances' masks and labels.

        Raises ImageError naming the file when the image is unreadable or its size is not the
        one the JSON gives.
        """
        image_id, file_name, height, width, labels, segms = self._record(index)
        if self.image_root is None:
            raise DatasetError(f"{self.annotations_file}: read without an image folder; no image to load")
        path = self.image_root / file_name
        image = read_image(path)
        if image.shape[:2] != (height, width):
            raise ImageError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} but {self.annotations_file.name} "
                f"says {height}x{width}"
            )
        polygons = tuple(segm if isinstance(segm, list) else None for segm in segms)
        return Sample(image, decode_masks(segms, height, width), np.array(labels, dtype=np.int64), image_id, file_name,
                      polygons)

    # -- reading -------------------------------------------------------------------------------

    def _record(self, index: int) -> tuple:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        start = 0 if index == 0 else int(self._ends[index - 1])
        return pickle.loads(self._buffer[start : int(self._ends[index])].tobytes())

    def _skip(self, items: list[Issue], name: str, reason: str, kind: str) -> None:
        if self.strict:
            raise DatasetError(f"{self.annotations_file}: {name}: {reason}")
        items.append(Issue(name, reason, kind))

    def _read_categories(self, categories: Any) -> list[dict]:
        source = self.annotations_file
        if not isinstance(categories, list) or not categories:
            raise DatasetError(f"{source}: no categories")
        by_id: dict[int, str] = {}
        for position, category in enumerate(categories):
            if not (isinstance(category, dict) and is_integer(category.get("id")) and isinstance(category.get("name"), str)):
                raise DatasetError(f"{source}: category #{position} needs an integer 'id' and a string 'name'")
            if category["id"] in by_id:
                raise DatasetError(f"{source}: category id {category['id']} appears twice")
            by_id[category["id"]] = category["name"]
        return [{"id": cid, "name": by_id[cid]} for cid in sorted(by_id)]

    def _read_images(self, images: list) -> dict[int, dict | None]:
        """Image records by id; None for an image that was skipped (its annotations go with it)."""
        records: dict[int, dict | None] = {}
        skipped = self.summary.skipped_images
        for position, entry in enumerate(images):
            name = _image_name(entry, position)
            if not isinstance(entry, dict):
                self._skip(skipped, name, "not a JSON object", MALFORMED)
                continue
            missing = [key for key in IMAGE_FIELDS if key not in entry]
            if missing:
                self._skip(skipped, name, "missing " + ", ".join(repr(key) for key in missing), MISSING_FIELD)
                continue
            image_id, file_name, height, width = (entry[key] for key in IMAGE_FIELDS)
            if not is_integer(image_id) or not isinstance(file_name, str) or not file_name:
                self._skip(skipped, name, "'id' must be an integer and 'file_name' a non-empty string",
                           INVALID_IMAGE_FIELDS)
            elif not (is_integer(height) and is_integer(width) and height > 0 and width > 0):
                self._skip(skipped, name, f"height and width must be positive integers, not {height!r}, {width!r}",
                           INVALID_IMAGE_FIELDS)
            elif image_id in records:
                self._skip(skipped, name, f"duplicate image id {image_id}", DUPLICATE_IMAGE_ID)
            elif self.image_root is not None and not (self.image_root / file_name).is_file():
                records[image_id] = None
                self._skip(skipped, name, f"file not found: {self.image_root / file_name}", MISSING_IMAGE_FILE)
            else:
                records[image_id] = {
                    "id": image_id, "file_name": file_name, "height": height, "width": width, "labels": [], "segms": []
                }
        return records

    def _read_annotations(self, annotations: list, records: dict[int, dict | None]) -> None:
        labels = {category["id"]: label for label, category in enumerate(self.categories)}
        skipped = self.summary.skipped_annotations
        seen_ids: set[int] = set()
        for position, entry in enumerate(annotations):
            if not isinstance(entry, dict):
                self._skip(skipped, f"annotation #{position}", "not a JSON object", MALFORMED)
                continue
            ann_id = entry.get("id")
            name = f"annotation {ann_id}" if is_integer(ann_id) else f"annotation #{position}"
            if is_integer(ann_id):
                if ann_id in seen_ids:
                    self.summary.noted_annotations.append(Issue(
                        f"annotation #{position}", f"id {ann_id} is used by another annotation (kept; COCO tools "
                        f"that index annotations by id lose one of them)", DUPLICATE_ANNOTATION_ID))
                seen_ids.add(ann_id)
            image_id = entry.get("image_id")
            if "image_id" not in entry:
                self._skip(skipped, name, "missing 'image_id'", MISSING_FIELD)
                continue
            if not is_integer(image_id) or image_id not in records:
                self._skip(skipped, name, f"image id {image_id!r} not in images", UNKNOWN_IMAGE)
                continue
            record = records[image_id]
            if record is None:
                continue  # its image was skipped and reported
            name = f"{name} (image {record['file_name']!r})"
            missing = [key for key in ANNOTATION_FIELDS if key not in entry]
            if missing:
                self._skip(skipped, name, "missing " + ", ".join(repr(key) for key in missing), MISSING_FIELD)
                continue
            if not is_integer(entry["category_id"]) or entry["category_id"] not in labels:
                self._skip(skipped, name, f"unknown category id {entry['category_id']!r}", UNKNOWN_CATEGORY)
                continue
            problem = segmentation_problem(entry["segmentation"], record["height"], record["width"])
            if problem:
                self._skip(skipped, name, problem, INVALID_SEGMENTATION)
                continue
            crowd = bool(entry.get("iscrowd", 0))
            if self._evaluated is not None:
                self._evaluated.append(self._evaluation_entry(entry, name, record, crowd))
            if crowd:
                self.summary.crowd += 1
                continue
            record["labels"].append(labels[entry["category_id"]])
            record["segms"].append(entry["segmentation"])

    def _evaluation_entry(self, entry: dict, name: str, record: dict, crowd: bool) -> dict:
        """The annotation as pycocotools reads it, with a fresh id, and its area and box computed
        from the mask when the file has none or gives one that is not finite and non-negative
        (the area decides the size range; such a repair is reported)."""
        height, width = record["height"], record["width"]
        area, box = entry.get("area"), entry.get("bbox")
        area_ok = is_finite_number(area) and area >= 0
        box_ok = isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box) and min(box[2:]) >= 0
        if not (area_ok and box_ok):
            rle = segmentation_rle(entry["segmentation"], height, width)
            area = area if area_ok else float(mask_utils.area(rle))
            box = box if box_ok else mask_utils.toBbox(rle).tolist()
            repaired = [key for key, ok in (("area", area_ok), ("bbox", box_ok)) if not ok and key in entry]
            if repaired:
                self.summary.repaired_annotations.append(
                    Issue(name, f"{' and '.join(repaired)} recomputed from the mask", RECOMPUTED_AREA_OR_BOX))
        return {"id": len(self._evaluated) + 1, "image_id": record["id"], "category_id": entry["category_id"],
                "segmentation": entry["segmentation"], "area": area, "bbox": box, "iscrowd": int(crowd)}

    def ground_truth(self) -> dict:
        """The accepted images and annotations (crowd regions too) as a COCO instances dict."""
        if self._evaluated is None:
            return CocoInstances(self.annotations_file).ground_truth()
        images = [dict(zip(("id", "file_name", "height", "width"), self.image_info(i))) for i in range(len(self))]
        kept = {image["id"] for image in images}
        return {"images": images, "annotations": [a for a in self._evaluated if a["image_id"] in kept],
                "categories": [dict(c) for c in self.categories]}


def decode_masks(segmentations: list, height: int, width: int) -> np.ndarray:
    """Validated COCO segmentations (polygons, uncompressed or compressed RLE) -> (K, H, W) uint8."""
    if not segmentations:
        return np.zeros((0, height, width), dtype=np.uint8)
    rles = [segmentation_rle(segm, height, width) for segm in segmentations]
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why a COCO segmentation cannot be decoded for an image of this size; None when it can.

    RLE counts are checked to cover exactly H*W pixels: pycocotools decodes without bounds
    checks, so a wrong RLE would write past the mask.
    """
    if isinstance(segm, list):
        if not segm:
            return "segmentation is empty"
        for polygon in segm:
            if not isinstance(polygon, list) or not all(is_finite_number(v) for v in polygon):
                return "polygons must be lists of numbers"
            if len(polygon) < MIN_POLYGON_COORDS:
                return f"polygon with fewer than {MIN_POLYGON_COORDS} coordinates ({len(polygon)})"
            if len(polygon) % 2:
                return f"polygon with an odd number of coordinates ({len(polygon)})"
            xs, ys = polygon[0::2], polygon[1::2]
            if not (-POLYGON_REACH * width <= min(xs) and max(xs) <= (1 + POLYGON_REACH) * width
                    and -POLYGON_REACH * height <= min(ys) and max(ys) <= (1 + POLYGON_REACH) * height):
                return f"polygon coordinates far outside the {height}x{width} image"
        return None
    if not isinstance(segm, dict):
        return "segmentation is neither polygons nor RLE"
    if "size" not in segm or "counts" not in segm:
        return "RLE needs 'size' and 'counts'"
    if not isinstance(segm["size"], list) or segm["size"] != [height, width]:
        return f"RLE size {segm['size']!r} disagrees with the image ({height}x{width})"
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(is_integer(c) and c >= 0 for c in counts):
            return "RLE counts must be non-negative integers"
    elif isinstance(counts, str):
        counts = _rle_string_counts(counts)
        if counts is None:
            return "RLE counts are not a valid compressed RLE string"
    else:
        return "RLE counts must be a list of integers or a compressed string"
    if sum(counts) != height * width:
        return f"RLE counts cover {sum(counts)} pixels, not {height}x{width} = {height * width}"
    return None


def _rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString), or None if invalid."""
    counts: list[int] = []
    value = shift = 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            return None
        counts.append(value)
        value = shift = 0
    return counts if shift == 0 else None


def _read_json(path: Path) -> dict:
    data = read_json(path, "annotations file", DatasetError)
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        found = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(
            f"{path}: not a COCO instances file (needs 'images', 'annotations', 'categories'; found {found or 'nothing'})"
        )
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: '{key}' must be a list")
    return data


def _serialize(records: Any) -> tuple[np.ndarray, np.ndarray]:
    blobs = [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL) for record in records]
    ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), ends


def _image_name(entry: Any, position: int) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("file_name"), str):
        return f"image {entry['file_name']!r}"
    if isinstance(entry, dict) and is_integer(entry.get("id")):
        return f"image id {entry['id']}"
    return f"image #{position}"


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
