"""Drawing predicted instances over an image."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from components import Instances

MASK_ALPHA = 0.5
GOLDEN_RATIO_CONJUGATE = 0.618033988749895
LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
OUTLINE_THICKNESS = 2


def instance_color(index: int) -> tuple[int, int, int]:
    """Distinct, bright RGB colours by stepping the hue around the circle."""
    hue = int(((index * GOLDEN_RATIO_CONJUGATE) % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_instances(image: np.ndarray, instances: Instances, class_names: list[str], min_score: float = 0.0,
                   *, labels: bool = True, track_ids: Sequence[int] | None = None) -> np.ndarray:
    """An RGB copy of ``image`` with masks, outlines and "class score" labels for instances
    scoring at least ``min_score``; every label lies whole inside the picture. The instances are
    painted from the least to the most confident, so that where two overlap the better one's mask
    and label are on top. With ``track_ids`` (one per instance) each track keeps its colour from
    frame to frame and its label starts with "#id"."""
    canvas = image.copy()
    instances = instances.to("cpu")
    shown = (instances.scores >= min_score).nonzero().flatten().tolist()
    shown.sort(key=lambda index: float(instances.scores[index]))
    if track_ids is None:
        colors = {index: instance_color(len(shown) - 1 - rank) for rank, index in enumerate(shown)}  # best first
    else:
        colors = {index: instance_color(track_ids[index]) for index in shown}
    for index in shown:
        x0, y0, x1, y1 = (int(v) for v in instances.boxes[index])
        if x1 <= x0 or y1 <= y0:
            continue  # an empty mask
        mask = instances.masks[index, y0:y1, x0:x1].numpy()  # the box holds the whole mask
        region = canvas[y0:y1, x0:x1]
        color = np.array(colors[index], dtype=np.float32)
        region[mask] = (region[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), OUTLINE_THICKNESS)
    if labels:
        for index in shown:
            label = int(instances.labels[index])
            name = class_names[label] if label < len(class_names) else str(label)
            x0, y0 = (int(v) for v in instances.boxes[index, :2])
            track = "" if track_ids is None else f"#{track_ids[index]} "
            draw_label(canvas, f"{track}{name} {float(instances.scores[index]):.2f}", x0, y0, colors[index])
    return canvas


def label_box(text: str, x: int, y: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Where a label for a box whose top-left corner is (x, y) goes, as (left, top, right, bottom)
    of its filled background: above the corner where there is room, else just below it; moved
    left or down as needed to stay whole inside a ``width`` x ``height`` picture (a label wider
    or taller than the picture starts at its edge)."""
    (text_width, text_height), baseline = cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS)
    box_height = text_height + baseline
    top = y - box_height if y >= box_height else y
    top = max(0, min(top, height - box_height))
    left = max(0, min(x, width - text_width))
    return left, top, left + text_width, top + box_height


def draw_label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """``text`` in black on a ``color`` background at ``label_box``'s place, in place."""
    left, top, right, bottom = label_box(text, x, y, canvas.shape[1], canvas.shape[0])
    _, baseline = cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS)
    cv2.rectangle(canvas, (left, top), (right - 1, bottom - 1), color, -1)
    cv2.putText(canvas, text, (left, bottom - baseline), LABEL_FONT, LABEL_SCALE, (0, 0, 0), LABEL_THICKNESS,
                cv2.LINE_AA)
