"""``sparseinst data split``: a deterministic train/val split of a COCO file, by image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, SparseInstError
from ..files import read_json, refuse_existing, write_json


@dataclass
class DatasetSplit:
    train: Path
    val: Path
    train_images: int
    val_images: int
    train_instances: int
    val_instances: int


def split_dataset(annotations: str | Path, val_fraction: float, seed: int = 0, *, out: Path | None = None,
                  overwrite: bool = False) -> DatasetSplit:
    """Split ``annotations`` by image into ``STEM_train.json`` and ``STEM_val.json`` (in ``out``,
    default beside it): ``round(val_fraction * images)`` images, at least one on each side, drawn
    by a seeded shuffle of the image ids in ascending order (the same file, fraction and seed
    give the same split). Annotations follow their image; categories and any other top-level
    keys are copied. Existing outputs are refused unless ``overwrite``."""
    annotations = Path(annotations)
    if not 0 < val_fraction < 1:
        raise SparseInstError(f"the validation fraction must lie between 0 and 1, got {val_fraction}", setting="val")
    data = read_json(annotations, "annotations file", DatasetError)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise DatasetError(f"{annotations}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    ids = sorted({image["id"] for image in data["images"] if isinstance(image, dict) and "id" in image})
    if len(ids) < 2:
        raise DatasetError(f"{annotations}: {len(ids)} image(s); a split needs at least 2")
    count = min(max(round(val_fraction * len(ids)), 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val_ids = {ids[i] for i in order[:count]}
    folder = Path(out) if out is not None else annotations.parent
    paths = {part: folder / f"{annotations.stem}_{part}.json" for part in ("train", "val")}
    refuse_existing(paths.values(), overwrite)
    if annotations.resolve() in [path.resolve() for path in paths.values()]:
        raise SparseInstError(f"{annotations}: the split would overwrite its own input", setting="out")
    counts = {}
    for part, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        images = [image for image in data["images"] if isinstance(image, dict) and keep(image.get("id"))]
        kept = {image["id"] for image in images}
        instances = [a for a in data["annotations"] if isinstance(a, dict) and a.get("image_id") in kept]
        write_json(paths[part], {**data, "images": images, "annotations": instances}, indent=None)
        counts[part] = (len(images), len(instances))
    (train_images, train_instances), (val_images, val_instances) = counts["train"], counts["val"]
    return DatasetSplit(paths["train"], paths["val"], train_images, val_images, train_instances, val_instances)
