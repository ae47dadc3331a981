"""COCO polygons moved with the image and drawn at the size training uses, as detectron2 does:
its dataset mapper transforms polygon vertices (resize, crop clipped to the window, flip) and
rasterizes them at the final size, so small objects keep sharp outlines that a mask decoded at the
original size and resized with nearest-neighbour sampling would lose."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

Polygons = list[np.ndarray]  # one object's parts, each (N, 2) float64 x, y vertices


def as_arrays(polygons: Sequence[Sequence[float]]) -> Polygons:
    """COCO's flat [x0, y0, x1, y1, ...] lists as (N, 2) arrays."""
    return [np.asarray(part, dtype=np.float64).reshape(-1, 2) for part in polygons]


def scale(polygons: Polygons, factor_x: float, factor_y: float) -> Polygons:
    """Vertices of an image resized by these factors (detectron2's ``ResizeTransform``)."""
    return [part * (factor_x, factor_y) for part in polygons]


def crop(polygons: Polygons, left: int, top: int, width: int, height: int) -> Polygons:
    """Each part clipped to the window and moved to its origin (detectron2's ``CropTransform``);
    parts left with fewer than three vertices are dropped."""
    clipped = (clip_to_box(part - (left, top), width, height) for part in polygons)
    return [part for part in clipped if len(part) >= 3]


def flip(polygons: Polygons, width: int) -> Polygons:
    """Vertices mirrored left to right in an image ``width`` wide (detectron2's ``HFlipTransform``)."""
    return [np.column_stack([width - part[:, 0], part[:, 1]]) for part in polygons]


def rasterize(polygons: Polygons, height: int, width: int) -> np.ndarray:
    """The union of the parts as a (height, width) uint8 mask, drawn by pycocotools as COCO's
    own masks are."""
    parts = [part.reshape(-1).tolist() for part in polygons if len(part) >= 3]
    if not parts:
        return np.zeros((height, width), dtype=np.uint8)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, height, width)))


def clip_to_box(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """A polygon (N, 2) clipped to the box [0, width] x [0, height] (Sutherland-Hodgman: exact
    for any polygon against a convex window; where a concave one leaves the box in several
    places the pieces stay joined along the border, which encloses the same area)."""
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if len(points) == 0:
            break
        inside = points[:, axis] <= bound if keep_below else points[:, axis] >= bound
        following = np.roll(points, -1, axis=0)
        following_inside = np.roll(inside, -1)
        kept = []
        for point, nxt, here, there in zip(points, following, inside, following_inside):
            if here:
                kept.append(point)
            if here != there:
                t = (bound - point[axis]) / (nxt[axis] - point[axis])
                kept.append(point + t * (nxt - point))
        points = np.asarray(kept, dtype=np.float64).reshape(-1, 2)
    return points
