"""Tiled inference for large images (SAHI's sliced inference): the model runs on overlapping
tiles at its own input size, i.e. at a higher effective resolution than the whole image
resized, plus once on the whole image; the instances found are merged where they are the same
object and returned as one ``Prediction`` at the original size.

Small objects are where SparseInst loses: its masks come from a stride-8 grid of an image
resized to ~640 pixels, so a 4000x3000 photo's small objects shrink below what it can see. A
tile of 640 pixels is predicted at its own size instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from components import Instances
from components.postprocess import masks_to_boxes

from ..data.images import ImageInput, as_rgb_array
from ..defaults import DEFAULT_OVERLAP, MIN_TILE
from ..errors import SparseInstError
from .results import ImagePredictor, Prediction

TILES_PER_FORWARD = 4  # tiles batched in one forward pass: amortizes the call, bounds the memory
MERGE_IOU = 0.5  # two windows' instances of one class whose masks overlap this much are one object
SEAM_OVERLAP = 0.5  # in the strip two windows share, the fraction of the smaller part that both parts cover
CONTAINED_FRACTION = 0.8  # a cut part lying this much inside another window's complete instance is a duplicate
CUT_MARGIN = 0.01  # the fraction of a tile within which a mask counts as touching the tile's edge


class Tile(NamedTuple):
    """A window of the image in pixels: rows ``top`` to ``bottom``, columns ``left`` to ``right``
    (ends exclusive)."""

    top: int
    left: int
    bottom: int
    right: int


def check_tiling(tile: int, overlap: float) -> None:
    """Refuse a ``tile`` below ``MIN_TILE`` pixels and an ``overlap`` outside [0, 1), in one line."""
    if not 0 <= overlap < 1:
        raise SparseInstError(f"overlap must be at least 0 and below 1 (a fraction of the tile), got {overlap}",
                              setting="overlap")
    if tile < MIN_TILE:
        raise SparseInstError(f"tile must be at least {MIN_TILE} pixels, got {tile}", setting="tile")


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where the tiles start along one side of ``length`` pixels: a step of ``tile`` less the
    overlap, the last tile shifted inward to end at the edge (it shares more than the overlap
    with its neighbour). A side not longer than a tile is one tile from 0."""
    if length <= tile:
        return [0]
    step = max(1, tile - round(tile * overlap))
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: float = DEFAULT_OVERLAP) -> list[Tile]:
    """The tiles covering a ``height`` x ``width`` image, row by row: each ``tile`` x ``tile``
    pixels (a side of the image shorter than a tile: that side), all inside the image, neighbours
    sharing at least ``overlap`` of a tile."""
    check_tiling(tile, overlap)
    return [Tile(top, left, top + min(tile, height), left + min(tile, width))
            for top in tile_starts(height, tile, overlap) for left in tile_starts(width, tile, overlap)]


@dataclass
class Piece:
    """One instance found in one window, kept cropped to its box (not at the image's size)."""

    mask: Tensor  # (h, w) bool, the mask inside its box
    top: int  # the box's corner in image pixels
    left: int
    score: float
    label: int
    source: int  # the window it was found in: an index into the windows (tiles, then the whole image)
    cut: bool  # it touches an edge of its tile inside the image: the tile saw part of the object
    area: int

    @property
    def bottom(self) -> int:
        return self.top + self.mask.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.mask.shape[1]

    def pixels_inside(self, window: Tile) -> int:
        """How many of the mask's pixels lie inside ``window`` (image pixels)."""
        return int(self.crop(window).sum())

    def crop(self, window: Tile) -> Tensor:
        """The part of the mask inside ``window`` (image pixels), (h', w') bool, maybe empty."""
        top, left = max(self.top, window.top), max(self.left, window.left)
        bottom, right = max(top, min(self.bottom, window.bottom)), max(left, min(self.right, window.right))
        return self.mask[top - self.top:bottom - self.top, left - self.left:right - self.left]


def pieces_of(prediction: Instances, window: Tile, source: int, image_size: tuple[int, int],
              margin: int) -> list[Piece]:
    """``prediction``'s instances, masks (K, h, w) over ``window``, as pieces in image pixels. A
    piece is cut when its mask comes within ``margin`` pixels of a window edge that is not an
    edge of the image (``image_size``: height, width)."""
    masks = prediction.masks.to("cpu")
    boxes = masks_to_boxes(masks).long().tolist()
    height, width = image_size
    inner = (window.left > 0, window.top > 0, window.right < width, window.bottom < height)
    window_height, window_width = window.bottom - window.top, window.right - window.left
    pieces = []
    for mask, (x0, y0, x1, y1), score, label in zip(masks, boxes, prediction.scores.tolist(),
                                                    prediction.labels.tolist()):
        near = (x0 <= margin, y0 <= margin, x1 >= window_width - margin, y1 >= window_height - margin)
        crop = mask[y0:y1, x0:x1].clone()  # a copy: the window's (K, h, w) masks are freed
        pieces.append(Piece(crop, window.top + y0, window.left + x0, score, label, source,
                            any(a and b for a, b in zip(near, inner)), int(crop.sum())))
    return pieces


def shared_pixels(a: Piece, b: Piece) -> int:
    """Pixels in both masks."""
    overlap = Tile(max(a.top, b.top), max(a.left, b.left), min(a.bottom, b.bottom), min(a.right, b.right))
    if overlap.bottom <= overlap.top or overlap.right <= overlap.left:
        return 0
    return int((a.crop(overlap) & b.crop(overlap)).sum())


class Groups:
    """Union-find over pieces that keeps at most one complete (uncut) piece per window in a
    group: the model is NMS-free, so two instances it found whole in one window stay two."""

    def __init__(self, pieces: Sequence[Piece]) -> None:
        self.parent = list(range(len(pieces)))
        self.complete = [{p.source} if not p.cut else set() for p in pieces]
        self.size = [1] * len(pieces)

    def root(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def join(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b or self.complete[a] & self.complete[b]:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.complete[a] |= self.complete[b]

    def members(self) -> Iterator[list[int]]:
        groups: dict[int, list[int]] = {}
        for index in range(len(self.parent)):
            groups.setdefault(self.root(index), []).append(index)
        return iter(groups.values())


def link_strength(a: Piece, b: Piece, common: int, windows: Sequence[Tile]) -> float:
    """How surely ``a`` and ``b``, of one class from different windows and sharing ``common``
    pixels, are one object; 0 when they are not. Their mask IoU where it reaches ``MERGE_IOU``
    (one object seen whole twice); else, when one is cut by its tile (an object cut by a seam:
    two parts whose IoU is low), the fraction of the smaller part in the strip both windows saw
    that both cover, where it reaches ``SEAM_OVERLAP``."""
    iou = common / (a.area + b.area - common)
    if iou >= MERGE_IOU:
        return iou
    if not (a.cut or b.cut):
        return 0.0
    in_strip = min(a.pixels_inside(windows[b.source]), b.pixels_inside(windows[a.source]))
    seam = common / in_strip if in_strip else 0.0  # both masks lie in their own windows: ``common`` is in the strip
    return seam if seam >= SEAM_OVERLAP else 0.0


def merge_pieces(pieces: Sequence[Piece], windows: Sequence[Tile]) -> list[list[int]]:
    """Group the pieces that are one object (``link_strength``), returning the groups to keep as
    indices into ``pieces``; ``windows`` are the windows the pieces' ``source`` index.

    Pieces of one window are never linked to each other, and a group holds at most one uncut
    piece per window (``Groups``). A cut piece left alone that lies ``CONTAINED_FRACTION`` inside
    an uncut instance of another window, of any class (a part seen without its context, named
    differently), is dropped as a duplicate.
    """
    boxes = np.array([[p.top, p.left, p.bottom, p.right] for p in pieces], dtype=np.int64).reshape(-1, 4)
    sources = np.array([p.source for p in pieces], dtype=np.int64)
    links: list[tuple[float, int, int]] = []
    contained = [False] * len(pieces)
    for i, a in enumerate(pieces):
        later = slice(i + 1, None)
        touching = ((boxes[later, 0] < a.bottom) & (boxes[later, 2] > a.top) & (boxes[later, 1] < a.right)
                    & (boxes[later, 3] > a.left) & (sources[later] != a.source))
        for j in (np.flatnonzero(touching) + i + 1).tolist():
            b = pieces[j]
            common = shared_pixels(a, b)
            if common == 0:
                continue
            contained[i] |= a.cut and not b.cut and common >= CONTAINED_FRACTION * a.area
            contained[j] |= b.cut and not a.cut and common >= CONTAINED_FRACTION * b.area
            strength = link_strength(a, b, common, windows) if a.label == b.label else 0.0
            if strength > 0:
                links.append((strength, i, j))
    groups = Groups(pieces)
    for _, i, j in sorted(links, reverse=True):  # surest first: the one-uncut-piece-per-window rule refuses later ones
        groups.join(i, j)
    return [group for group in groups.members() if not (len(group) == 1 and contained[group[0]])]


def assemble(pieces: Sequence[Piece], groups: Sequence[list[int]], image_size: tuple[int, int]) -> Instances:
    """One instance per group: the union of its masks (K, H, W) bool at ``image_size``, the best
    score of its pieces, their class; best first, boxes from the masks."""
    masks = torch.zeros((len(groups), *image_size), dtype=torch.bool)
    scores = torch.zeros(len(groups))
    labels = torch.zeros(len(groups), dtype=torch.int64)
    for k, group in enumerate(groups):
        for piece in (pieces[i] for i in group):
            masks[k, piece.top:piece.bottom, piece.left:piece.right] |= piece.mask
        scores[k] = max(pieces[i].score for i in group)
        labels[k] = pieces[group[0]].label
    order = torch.argsort(scores, descending=True, stable=True)
    masks, scores, labels = masks[order], scores[order], labels[order]
    return Instances(masks, scores, labels, masks_to_boxes(masks), image_size)


def predict_tiled(
    predictor: ImagePredictor,
    image: ImageInput,
    *,
    tile: int,
    overlap: float = DEFAULT_OVERLAP,
    conf: float | None = None,
    full_image: bool = True,
    bgr: bool = False,
) -> Prediction:
    """Predict a large image tile by tile: ``tile`` x ``tile`` pixel tiles (image pixels), each
    sharing ``overlap`` of a tile with its neighbours (edge tiles shifted inward, full-size), each
    predicted at the model's input size, plus the whole image once (``full_image``: finds the
    objects larger than a tile). Instances that are one object are merged (``merge_pieces``:
    mask IoU, or two parts of an object cut by a seam), keeping the union of their masks and the
    best score; within one window nothing is suppressed. An image not larger than one tile is
    predicted whole, as ``predictor.predict`` does.

    ``image``: a path, a PIL image or a uint8 array (H, W, 3), RGB or BGR with ``bgr``; ``conf``
    as in ``Predictor.predict``. Returns one ``Prediction`` at the original size, on the CPU:
    masks (K, H, W) bool, best first, boxes from the masks, with ``image`` (RGB), ``source`` and
    ``categories`` set as ``predict`` sets them. It may hold more instances than the model's
    ``max_detections`` (that limit is per window).

    Cost: (tiles / ``TILES_PER_FORWARD`` + 1) forward passes; while merging, each instance is
    kept cropped to its box, but the result's masks are K x H x W bytes (a 4000x3000 image with
    100 instances: 1.2 GB).
    """
    check_tiling(tile, overlap)
    source = str(image) if isinstance(image, (str, Path)) else None
    rgb = as_rgb_array(image, bgr)
    height, width = rgb.shape[:2]
    if height <= tile and width <= tile:
        whole = predictor.predict([rgb], conf=conf)[0].to("cpu")
        whole.source = source
        return whole
    tiles = tile_grid(height, width, tile, overlap)
    windows = [*tiles, Tile(0, 0, height, width)]
    margin = max(1, round(tile * CUT_MARGIN))
    pieces: list[Piece] = []
    categories: list[dict] = []
    for first in range(0, len(tiles), TILES_PER_FORWARD):
        batch = tiles[first:first + TILES_PER_FORWARD]
        found = predictor.predict([rgb[t.top:t.bottom, t.left:t.right] for t in batch], conf=conf)
        for offset, (window, prediction) in enumerate(zip(batch, found)):
            pieces += pieces_of(prediction, window, first + offset, (height, width), margin)
            categories = prediction.categories
    if full_image:
        prediction = predictor.predict([rgb], conf=conf)[0]
        pieces += pieces_of(prediction, windows[-1], len(tiles), (height, width), margin)
    instances = assemble(pieces, merge_pieces(pieces, windows), (height, width))
    return Prediction.of(instances, categories, rgb, source)
