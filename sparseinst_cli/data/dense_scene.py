"""A drawn dense scene: one image packed with small touching objects, as a COCO dataset (for
stress tests of training on crowded images and for profiling a training step)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .coco import encode_rle
from .images import write_image

CELL = 24  # pixels per grid cell; neighbouring objects touch


def write_dense_scene(out: Path, rows: int = 10, cols: int = 10, seed: int = 0, cell: int = CELL) -> Path:
    """``out/dense.json`` and ``out/images/dense.png``: rows x cols ellipses (nuclei-like) that
    fill their cells edge to edge, two classes alternating, on a textured background."""
    rng = np.random.default_rng(seed)
    height, width = rows * cell, cols * cell
    image = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    annotations = []
    for row in range(rows):
        for col in range(cols):
            mask = np.zeros((height, width), np.uint8)
            center = (col * cell + cell // 2, row * cell + cell // 2)
            axes = (cell // 2, cell // 2 - int(rng.integers(0, 4)))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            label = (row + col) % 2
            image[mask > 0] = (200, 80 + 60 * label, 60) + rng.integers(-20, 20, 3)
            annotations.append({
                "id": len(annotations) + 1, "image_id": 1, "category_id": label + 1, "iscrowd": 0,
                "segmentation": encode_rle(mask), "area": int(mask.sum()),
            })
    (out / "images").mkdir(parents=True, exist_ok=True)
    write_image(out / "images" / "dense.png", image)
    data = {
        "images": [{"id": 1, "file_name": "dense.png", "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "cell"}],
    }
    path = out / "dense.json"
    path.write_text(json.dumps(data))
    return path
