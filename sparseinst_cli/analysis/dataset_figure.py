"""A PNG of what ``sparseinst data check`` found: instances per class and the instance sizes.

Left: a bar per class (the ``MAX_CLASSES`` most frequent when there are more). Right: a
histogram of the instances' side length (square root of the mask area, log scale), with COCO's
small/medium/large bounds marked and each range's count written at its top. Drawn on
matplotlib's Agg canvas, with constrained layout keeping every label inside the image; no global
backend is set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from ..data.check import LARGE_AREA, SMALL_AREA, DatasetCheck
from ..files import atomic_write

FIGURE_INCHES = (12.0, 4.5)
DPI = 100  # 1200 x 450 pixels
MAX_CLASSES = 40
SIZE_BINS = 40
UPRIGHT_CHARACTERS = 80  # class names are written level when (count x longest) fits this, else slanted
SMALL_NAME_SIZE = 7  # font size of slanted class names
SIZE_MARGIN = 1.5  # the size axis reaches this factor beyond the data and the COCO bounds
MAX_SIZE_TICKS = 10  # side-length ticks are powers of 2, every other one (or fewer) past this many
COUNT_HEADROOM = 1.3  # y-axis top of the histogram as a multiple of its tallest bar, room for the range counts


def save_dataset_figure(check: DatasetCheck, path: str | Path) -> Path:
    """Write the figure of ``check`` to ``path`` (PNG); returns it."""
    path = Path(path)
    figure = dataset_figure(check)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


def dataset_figure(check: DatasetCheck) -> Figure:
    """The two panels of ``check`` on an Agg canvas."""
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    classes, sizes = figure.subplots(1, 2, width_ratios=(3, 2))
    _class_panel(classes, check)
    _size_panel(sizes, check)
    return figure


def _class_panel(axes: Axes, check: DatasetCheck) -> None:
    """A bar per class, the most frequent first."""
    counts = sorted(check.instances_per_class.items(), key=lambda item: -item[1])[:MAX_CLASSES]
    names, values = zip(*counts) if counts else ((), ())
    axes.bar(range(len(values)), values, color="tab:blue")
    if len(names) * max(map(len, names), default=0) <= UPRIGHT_CHARACTERS:
        axes.set_xticks(range(len(names)), names)
    else:
        axes.set_xticks(range(len(names)), names, rotation=60, ha="right", rotation_mode="anchor",
                        fontsize=SMALL_NAME_SIZE)
    if not counts:
        axes.set_ylim(0, 1)
        axes.text(0.5, 0.5, "no instances", ha="center", va="center", transform=axes.transAxes)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    shown = f" ({MAX_CLASSES} most frequent of {len(check.instances_per_class)})" if len(
        check.instances_per_class) > MAX_CLASSES else ""
    axes.set_title(f"instances per class{shown}")
    axes.set_xlabel(f"{check.instances} instances in {check.images} images")
    axes.set_ylabel("instances")


def _size_panel(axes: Axes, check: DatasetCheck) -> None:
    """A histogram of the instances' side lengths on a log axis, COCO's size ranges marked and counted."""
    bounds = (math.sqrt(SMALL_AREA), math.sqrt(LARGE_AREA))
    sides = np.sqrt(np.asarray(check.areas, dtype=float))
    sides = sides[sides > 0]
    low, high = bounds
    if sides.size:
        low = max(sides.min(), 1.0)
        high = max(sides.max(), 2 * low)
        heights, _, _ = axes.hist(sides, bins=np.geomspace(low, high, SIZE_BINS), color="tab:green")
        axes.set_ylim(0, max(1.0, heights.max()) * COUNT_HEADROOM)
    else:
        axes.text(0.5, 0.5, "no instances", ha="center", va="center", transform=axes.transAxes)
    axes.set_xscale("log")
    left, right = min(low, bounds[0]) / SIZE_MARGIN, max(high, bounds[1]) * SIZE_MARGIN
    axes.set_xlim(left, right)
    powers = range(math.ceil(math.log2(left)), math.floor(math.log2(right)) + 1)
    ticks = [2.0**k for k in powers[:: -(-len(powers) // MAX_SIZE_TICKS)]]
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    for bound in bounds:
        axes.axvline(bound, color="tab:red", linestyle="--", linewidth=1)
    edges = (left, *bounds, right)
    for name, start, stop in zip(("small", "medium", "large"), edges, edges[1:]):
        axes.text(math.sqrt(start * stop), 0.97, f"{name}\n{check.instance_sizes[name]}",
                  transform=axes.get_xaxis_transform(), ha="center", va="top", color="tab:red", fontsize="small")
    axes.set_title("instance size")
    axes.set_xlabel("side length: square root of the mask area, pixels (log scale)")
    axes.set_ylabel("instances")
