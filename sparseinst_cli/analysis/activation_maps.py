"""Instance activation maps made visible (SPEC 4; the paper's Figures 4 and 6).

- :func:`image_figure`: for one image, each kept instance's predicted mask with its class and
  score, next to its activation map(s) (all G maps of a Group-IAM instance) over the image.
- :func:`dataset_mean_maps` and :func:`mean_maps_figure`: the mean activation of chosen IAM
  channels over a dataset, each map resized to a common square first, shown as a grid.

The maps are the model's own normalized activation maps (``return_maps=True``), brought to image
space the way masks are: upsampled to the padded input, cropped to the resized image, resized.
Each map sums to 1 over the model's feature grid, so a value is the share of the map's mass in
one feature cell. All the maps of one figure share one logarithmic colour scale, up to the
largest value drawn, and a colour bar under the grid gives it in multiples of an even spread
(1 = a uniform map over the model's input, or over the image for the dataset means), so maps can
be compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from components import SparseInstOutput
from components.postprocess import instance_scores, maskness, postprocess

from ..data.datasets import CocoInstances
from ..data.images import read_image, read_skipping, write_image
from ..defaults import IAM_TOP_K
from ..errors import ImageError, NothingToShow, SparseInstError
from ..files import output_file, write_json
from ..inference.drawing import MASK_ALPHA, instance_color
from ..inference.predictor import Predictor
from ..progress import SILENT, Progress

CELL_WIDTH = 224  # pixels across one cell of the per-image grid
MEAN_CELL = 96  # side of one cell of the dataset grid (and of the common square maps are averaged on)
MEAN_COLUMNS = 10
LABEL_HEIGHT = 22  # text strip above each row
GAP = 2  # pixels between cells
HEAT_ALPHA = 0.55  # weight of the heat map over the image
BACKGROUND = 255
TEXT_COLOR = (0, 0, 0)
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg")
SCALE_LABEL = "activation, multiple of an even spread (1 = uniform map), log scale"
SCALE_FLOOR = 0.1  # bottom of the colour scale, in multiples of an even spread
MAX_FINE_DECADES = 3  # colour bars spanning more decades get ticks at powers of ten only
COLORBAR_PAD = 10  # white pixels between the grid and the colour bar
COLORBAR_THICKNESS = 14  # pixels from top to bottom of the colour ramp
COLORBAR_MAX_LENGTH = 512  # pixels across the ramp, at most
COLORBAR_MARGIN = 32  # pixels left and right of the ramp, room for the end tick labels
TICK_LENGTH = 4
COLORBAR_HEIGHT = COLORBAR_PAD + COLORBAR_THICKNESS + TICK_LENGTH + 2 * LABEL_HEIGHT  # strip under the grid
MIN_FIGURE_WIDTH = 480  # the colour bar's label fits across it


@dataclass(frozen=True)
class ColorScale:
    """A logarithmic colour scale shared by the maps of one figure: map values (shares of a map's
    mass) from ``low`` to ``high``; values at or below ``low`` get the bottom colour. ``cells``:
    the number of cells a map is spread over, so that a map value times ``cells`` is the colour
    bar's unit, a multiple of an even spread."""

    low: float
    high: float
    cells: float = 1.0

    @classmethod
    def up_to(cls, peak: float, cells: float = 1.0) -> ColorScale:
        """The scale up to ``peak`` from SCALE_FLOOR in the bar's unit, or from a decade below
        ``peak`` where that is lower."""
        high = peak if peak > 0 else 1.0 / cells
        return cls(min(SCALE_FLOOR, high * cells / 10) / cells, high, cells)

    def fraction(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` fall on the scale, 0 (bottom colour) to 1 (top colour)."""
        logs = np.log(np.maximum(values, self.low))
        return np.clip((logs - math.log(self.low)) / math.log(self.high / self.low), 0.0, 1.0)

    def ticks(self) -> list[float]:
        """Round values in the bar's unit between its ends: 1, 2 and 5 in each decade (only 1
        when the scale spans more than MAX_FINE_DECADES decades)."""
        low, high = self.low * self.cells, self.high * self.cells
        steps = (1, 2, 5) if math.log10(high / low) <= MAX_FINE_DECADES else (1,)
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        values = (float(f"{step}e{decade}") for decade in decades for step in steps)
        return [v for v in values if low * (1 - 1e-9) <= v <= high * (1 + 1e-9)]


@dataclass
class IAMFigure:
    """A rendered grid and what it shows.

    grid: (H, W, 3) uint8 RGB, the colour bar included. candidates: (K,) the IAM channel (instance
    index) of each row. labels, scores: (K,). maps: (K, G, cell_h, cell_w) the activation maps
    drawn, in image space (shares of each map's mass per feature cell). scale: the colour scale
    of every map, up to the largest value in ``maps``.
    """

    grid: np.ndarray
    candidates: list[int]
    labels: list[int]
    scores: list[float]
    maps: Tensor
    scale: ColorScale


def _jet(fraction: np.ndarray) -> np.ndarray:
    """JET colours (..., 3) RGB uint8 of ``fraction`` (...) in [0, 1]."""
    scaled = np.round(255 * fraction).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def heat_map(activation: np.ndarray, scale: ColorScale | None = None) -> np.ndarray:
    """A JET colour image (h, w, 3) RGB uint8 of ``activation`` (h, w) >= 0 on ``scale`` (by
    default the log scale up to the map's own maximum)."""
    scale = ColorScale.up_to(float(activation.max())) if scale is None else scale
    return _jet(scale.fraction(activation))


def heat_overlay(image: np.ndarray, activation: np.ndarray, scale: ColorScale | None = None) -> np.ndarray:
    """``image`` (h, w, 3) RGB uint8 blended with the heat map of ``activation`` (h, w) on ``scale``."""
    return np.round(image * (1 - HEAT_ALPHA) + heat_map(activation, scale) * HEAT_ALPHA).astype(np.uint8)


def colorbar(width: int, scale: ColorScale, label: str = SCALE_LABEL) -> np.ndarray:
    """A white strip (COLORBAR_HEIGHT, width, 3) RGB uint8: a horizontal ramp of ``scale``'s
    colours, bottom to top from left to right, with its ticks and ``label`` under it."""
    strip = np.full((COLORBAR_HEIGHT, width, 3), BACKGROUND, np.uint8)
    length = min(COLORBAR_MAX_LENGTH, width - 2 * COLORBAR_MARGIN)
    left, top = (width - length) // 2, COLORBAR_PAD
    ramp = _jet(np.linspace(0.0, 1.0, length))  # (length, 1, 3)
    strip[top: top + COLORBAR_THICKNESS, left: left + length] = ramp.reshape(1, length, 3)
    bottom = top + COLORBAR_THICKNESS
    for value in scale.ticks():
        x = left + round((length - 1) * float(scale.fraction(np.array(value / scale.cells))))
        cv2.line(strip, (x, bottom), (x, bottom + TICK_LENGTH - 1), TEXT_COLOR, 1)
        _centred(strip, f"{value:g}", x, bottom + TICK_LENGTH)
    _centred(strip, label, width // 2, bottom + TICK_LENGTH + LABEL_HEIGHT)
    return strip


def _with_colorbar(grid: np.ndarray, scale: ColorScale) -> np.ndarray:
    """``grid`` widened (white, on the right) to MIN_FIGURE_WIDTH if narrower, with its colour bar under it."""
    width = max(grid.shape[1], MIN_FIGURE_WIDTH)
    wide = np.full((grid.shape[0], width, 3), BACKGROUND, np.uint8)
    wide[:, : grid.shape[1]] = grid
    return np.concatenate([wide, colorbar(width, scale)])


def maps_in_image_space(maps: Tensor, input_size: tuple[int, int], image_size: tuple[int, int],
                        size: tuple[int, int]) -> Tensor:
    """(K, G, h, w) maps over a padded input of ``input_size`` -> (K, G, *size) over the resized
    image of ``image_size`` inside it (the same path as the masks in post-processing)."""
    k, g = maps.shape[:2]
    flat = maps.float().flatten(0, 1).unsqueeze(1)
    flat = F.interpolate(flat, size=input_size, mode="bilinear", align_corners=False)
    flat = F.interpolate(flat[..., : image_size[0], : image_size[1]], size=size, mode="bilinear", align_corners=False)
    return flat.clamp(min=0).reshape(k, g, *size)


def _label(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x + 4, y + LABEL_HEIGHT - 7), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)


def _centred(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    """``text`` centred on ``x`` in the LABEL_HEIGHT row starting at ``y``."""
    (text_width, _), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    _label(canvas, text, x - text_width // 2 - 4, y)


def image_figure(predictor: Predictor, image: np.ndarray, *, top_k: int = IAM_TOP_K,
                 conf: float | None = None) -> IAMFigure:
    """The grid for one RGB image: a row per kept instance (best first, at most ``top_k`` scoring
    at least ``conf``, by default the model's ``inference.conf``): its mask, then its G
    activation maps, all on one colour scale; then the colour bar.

    Grid size: height K * (LABEL_HEIGHT + cell_h) + COLORBAR_HEIGHT, width
    max((1 + G) * CELL_WIDTH + G * GAP, MIN_FIGURE_WIDTH), where cell_h = round(H * CELL_WIDTH / W)
    for an image of H x W.
    """
    batch = predictor.preprocess([image])
    output = predictor.forward(batch, return_maps=True)
    spec = predictor.recipe.inference
    conf = spec.conf if conf is None else conf
    objectness = output.objectness.float() if spec.objectness_rescoring else None
    scores, _ = instance_scores(output.logits.float(), objectness)
    scores = (scores * maskness(output.masks.float().sigmoid(), spec.mask_threshold))[0]
    ranked = scores.argsort(descending=True)
    chosen = ranked[scores[ranked] >= conf][:top_k]
    if chosen.numel() == 0:
        raise NothingToShow(f"no instance scores {conf} or more (best: {float(scores.max()):.3f}); "
                            f"lower the confidence threshold", setting="conf")
    # Post-processing of the chosen candidates alone gives their masks at the image size, in order.
    selected = SparseInstOutput(output.logits[:, chosen], output.objectness[:, chosen], output.masks[:, chosen])
    instances = postprocess(selected, tuple(batch.images.shape[-2:]), batch.image_sizes, batch.original_sizes,
                            candidate_threshold=-1.0, mask_threshold=spec.mask_threshold,
                            objectness_rescoring=spec.objectness_rescoring, keep_empty=True)[0].to("cpu")
    height, width = image.shape[:2]
    cell_h = max(1, round(height * CELL_WIDTH / width))
    cell = cv2.resize(image, (CELL_WIDTH, cell_h), interpolation=cv2.INTER_AREA)
    maps = maps_in_image_space(output.maps[0, chosen], tuple(batch.images.shape[-2:]), batch.image_sizes[0],
                               (cell_h, CELL_WIDTH)).cpu()
    groups = maps.shape[1]
    feature_cells = output.maps.shape[-2] * output.maps.shape[-1]  # an even spread puts 1 / cells in each
    scale = ColorScale.up_to(float(maps.max()), feature_cells)
    row_h = LABEL_HEIGHT + cell_h
    grid = np.full((len(chosen) * row_h, (1 + groups) * CELL_WIDTH + groups * GAP, 3), BACKGROUND, np.uint8)
    names = predictor.class_names
    for row, candidate in enumerate(chosen.tolist()):
        top = row * row_h
        mask = cv2.resize(instances.masks[row].numpy().astype(np.uint8), (CELL_WIDTH, cell_h),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
        drawn = cell.copy()
        drawn[mask] = np.round(drawn[mask] * (1 - MASK_ALPHA) + np.array(instance_color(row)) * MASK_ALPHA)
        grid[top + LABEL_HEIGHT: top + row_h, :CELL_WIDTH] = drawn
        label = int(instances.labels[row])
        _label(grid, f"IAM {candidate}: {names[label]} {float(instances.scores[row]):.2f}", 0, top)
        for group in range(groups):
            left = (1 + group) * (CELL_WIDTH + GAP)
            heat = heat_overlay(cell, maps[row, group].numpy(), scale)
            grid[top + LABEL_HEIGHT: top + row_h, left: left + CELL_WIDTH] = heat
            if groups > 1:
                _label(grid, f"group {group + 1}", left, top)
    return IAMFigure(_with_colorbar(grid, scale), chosen.tolist(), instances.labels.tolist(),
                     instances.scores.tolist(), maps, scale)


@torch.inference_mode()
def dataset_mean_maps(predictor: Predictor, dataset: CocoInstances, channels: Sequence[int], *,
                      max_images: int | None = None, batch_size: int = 4,
                      progress: Progress = SILENT) -> tuple[Tensor, int, list[str]]:
    """Mean activation maps (len(channels), G, MEAN_CELL, MEAN_CELL) of the chosen IAM channels
    over the dataset's images, each resized to the square first; plus the number of images used
    and the messages of unreadable ones."""
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    index = torch.as_tensor(list(channels), dtype=torch.long)
    total: Tensor | None = None
    used, failures = 0, []
    progress.start("viz-iam", count)
    for start in range(0, count, batch_size):
        chunk = range(start, min(start + batch_size, count))
        images = [sample.image for _, sample in read_skipping(chunk, dataset.load, failures, progress)]
        if images:
            batch = predictor.preprocess(images)
            maps = predictor.forward(batch, return_maps=True).maps
            input_size = tuple(batch.images.shape[-2:])
            for b, image_size in enumerate(batch.image_sizes):
                square = maps_in_image_space(maps[b, index.to(maps.device)], input_size, image_size,
                                             (MEAN_CELL, MEAN_CELL)).cpu()
                square = square / square.sum((-2, -1), keepdim=True).clamp(min=1e-12)  # a distribution again
                total = square if total is None else total + square
                used += 1
            progress.advance(len(images))
    progress.stop()
    if total is None:
        raise ImageError("no readable image in the dataset")
    return total / used, used, failures


def mean_maps_figure(means: Tensor, channels: Sequence[int], per_group: bool = False) -> np.ndarray:
    """A grid of the mean maps: one cell per channel (its G maps averaged), or per channel and
    group with ``per_group``; MEAN_COLUMNS cells a row, each labelled with its channel, all on one
    colour scale up to the largest mean value, with the colour bar under them.

    Size: height rows * (LABEL_HEIGHT + MEAN_CELL) + COLORBAR_HEIGHT, width
    max(columns * (MEAN_CELL + GAP) - GAP, MIN_FIGURE_WIDTH)."""
    if per_group:
        cells = [(f"{c}.{g + 1}", means[i, g]) for i, c in enumerate(channels) for g in range(means.shape[1])]
    else:
        cells = [(str(c), means[i].mean(0)) for i, c in enumerate(channels)]
    columns = min(MEAN_COLUMNS, len(cells))
    rows = -(-len(cells) // columns)
    step_x, step_y = MEAN_CELL + GAP, LABEL_HEIGHT + MEAN_CELL
    grid = np.full((rows * step_y, columns * step_x - GAP, 3), BACKGROUND, np.uint8)
    peak = max(float(activation.max()) for _, activation in cells)
    scale = ColorScale.up_to(peak, MEAN_CELL * MEAN_CELL)  # each mean map sums to 1 over the square
    for n, (name, activation) in enumerate(cells):
        top, left = (n // columns) * step_y, (n % columns) * step_x
        grid[top + LABEL_HEIGHT: top + step_y, left: left + MEAN_CELL] = heat_map(activation.numpy(), scale)
        _label(grid, f"IAM {name}", left, top)
    return _with_colorbar(grid, scale)


def map_statistics(means: Tensor, channels: Sequence[int]) -> list[dict]:
    """Per channel: the centre of mass (x, y in [0, 1] of the image) and spread (standard
    deviation, same units) of its mean map (G maps averaged)."""
    maps = means.mean(1)  # (C, s, s)
    size = maps.shape[-1]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    stats = []
    for channel, activation in zip(channels, maps):
        mass = activation / activation.sum().clamp(min=1e-12)
        py, px = mass.sum(1), mass.sum(0)
        cx, cy = float((px * coords).sum()), float((py * coords).sum())
        spread = float(((px * (coords - cx) ** 2).sum() + (py * (coords - cy) ** 2).sum()).sqrt())
        stats.append({"channel": int(channel), "center_x": round(cx, 4), "center_y": round(cy, 4),
                      "spread": round(spread, 4)})
    return stats


def explain_image(predictor: Predictor, image: Path, out: Path, *, top_k: int = IAM_TOP_K,
                  conf: float | None = None) -> IAMFigure:
    """``image_figure`` of an image file, written as a PNG to ``out``."""
    if top_k < 1:
        raise SparseInstError(f"top_k must be at least 1, got {top_k}", setting="top_k")
    output_file(out, FIGURE_SUFFIXES, inputs=[image])
    figure = image_figure(predictor, read_image(image), top_k=top_k, conf=conf)
    write_image(out, figure.grid)
    return figure


@dataclass
class DatasetMaps:
    images: int  # images averaged over
    failures: list[str]  # unreadable images, one message each
    channels: list[dict]  # ``map_statistics``
    figure: Path
    statistics: Path


def explain_dataset(predictor: Predictor, dataset: CocoInstances, out: Path, *, channels: Sequence[int] | None = None,
                    per_group: bool = False, max_images: int | None = None,
                    progress: Progress = SILENT) -> DatasetMaps:
    """The mean maps of ``channels`` (default: all) over the dataset: a PNG at ``out`` and their
    statistics as JSON beside it."""
    output_file(out, FIGURE_SUFFIXES)
    if max_images is not None and max_images < 1:
        raise SparseInstError(f"max_images must be at least 1, got {max_images}", setting="max_images")
    num_instances = predictor.recipe.model.decoder.num_instances
    channels = list(range(num_instances)) if channels is None else list(channels)
    bad = [c for c in channels if not 0 <= c < num_instances]
    if bad or not channels:
        raise SparseInstError(f"the model has IAM channels 0-{num_instances - 1}; got {bad or 'none'}",
                              setting="channels")
    means, used, failures = dataset_mean_maps(predictor, dataset, channels, max_images=max_images, progress=progress)
    write_image(out, mean_maps_figure(means, channels, per_group))
    stats = map_statistics(means, channels)
    summary = out.with_suffix(".json")
    write_json(summary, {"images": used, "channels": stats})
    return DatasetMaps(used, failures, stats, out, summary)
