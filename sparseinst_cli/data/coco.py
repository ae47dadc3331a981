"""COCO categories and result records (RLE masks)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import ResultsError

# The 80 COCO categories in contiguous-label order, with their dataset ids.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)


def default_categories(num_classes: int, class_names: tuple[str, ...] | None = None) -> list[dict]:
    """COCO's categories for an 80-class model without names; otherwise ids 1..C."""
    if class_names is None and num_classes == len(COCO_CATEGORIES):
        return [{"id": cid, "name": name} for cid, name in COCO_CATEGORIES]
    names = class_names or tuple(f"class_{i}" for i in range(num_classes))
    return [{"id": i + 1, "name": name} for i, name in enumerate(names)]


def match_categories(model_categories: list[dict], dataset_categories: list[dict]) -> list[dict]:
    """The model's classes with the dataset's category ids, matched by name.

    A model whose names differ from the dataset's (e.g. generic ``class_3``) but has as many
    classes is taken in the dataset's id order; a different class count is a ``ResultsError``.
    """
    if len(model_categories) != len(dataset_categories):
        raise ResultsError(f"the model predicts {len(model_categories)} classes but the dataset has "
                           f"{len(dataset_categories)} categories")
    ids = {c["name"]: c["id"] for c in dataset_categories}
    if all(c["name"] in ids for c in model_categories):
        return [{"id": ids[c["name"]], "name": c["name"]} for c in model_categories]
    return [{"id": d["id"], "name": d["name"]} for d in dataset_categories]


def encode_rle(mask: np.ndarray) -> dict:
    """A binary mask (H, W) as COCO compressed RLE with a JSON-ready ``counts`` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed or not) as a binary mask (H, W) uint8."""
    return mask_utils.decode(segmentation_rle(rle, *rle["size"]))


def segmentation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) of an image of this size as
    one compressed RLE in pycocotools' form (bytes ``counts``)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def coco_results(instances, image_id: int, categories: list[dict]) -> list[dict]:
    """One COCO record per instance of an ``Instances``: dataset category id, RLE mask, XYWH box,
    area (mask pixels), score and ``iscrowd`` 0 (a results file entry, and with an ``id`` an
    annotation)."""
    instances = instances.to("cpu")
    records = []
    for mask, score, label, box in zip(instances.masks, instances.scores, instances.labels, instances.boxes):
        x0, y0, x1, y1 = (round(float(v), 2) for v in box)
        records.append({
            "image_id": image_id,
            "category_id": categories[int(label)]["id"],
            "segmentation": encode_rle(mask.numpy()),
            "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
            "area": int(mask.sum()),
            "score": round(float(score), 6),
            "iscrowd": 0,
        })
    return records
