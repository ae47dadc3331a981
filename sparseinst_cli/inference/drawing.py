"""Drawing predicted instances over an image."""

from __future__ import annotations

import cv2
import numpy as np

from components import Instances

MASK_ALPHA = 0.5
SHOW_THRESHOLD = 0.3  # pictures show instances scoring at least this; JSON results keep all
GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def instance_color(index: int) -> tuple[int, int, int]:
    """Distinct, bright RGB colours by stepping the hue around the circle."""
    hue = int(((index * GOLDEN_RATIO_CONJUGATE) % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_instances(image: np.ndarray, instances: Instances, class_names: list[str], min_score: float) -> np.ndarray:
    """An RGB copy of ``image`` with masks, outlines and "class score" labels for instances
    scoring at least ``min_score``."""
    canvas = image.copy()
    instances = instances.to("cpu")
    shown = (instances.scores >= min_score).nonzero().flatten().tolist()
    for rank, index in enumerate(shown):
        x0, y0, x1, y1 = (int(v) for v in instances.boxes[index])
        if x1 <= x0 or y1 <= y0:
            continue  # an empty mask
        mask = instances.masks[index, y0:y1, x0:x1].numpy()  # the box holds the whole mask
        region = canvas[y0:y1, x0:x1]
        color = np.array(instance_color(rank), dtype=np.float32)
        region[mask] = (region[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), 2)
    for rank, index in enumerate(shown):
        x0, y0 = (int(v) for v in instances.boxes[index, :2])
        label = int(instances.labels[index])
        name = class_names[label] if label < len(class_names) else str(label)
        text = f"{name} {float(instances.scores[index]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(y0, th + base)
        cv2.rectangle(canvas, (x0, y - th - base), (x0 + tw, y), instance_color(rank), -1)
        cv2.putText(canvas, text, (x0, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
