"""A PNG of what ``sparseinst data check`` found: instances per class and the instance sizes.

Left: a bar per class (the ``MAX_CLASSES`` most frequent when there are more). Right: a
histogram of the instances' side length (square root of the mask area, log scale), with COCO's
small/medium/large bounds marked. Drawn on matplotlib's Agg canvas; no global backend is set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.check import LARGE_AREA, SMALL_AREA, DatasetCheck
from ..files import atomic_write

FIGURE_INCHES = (12.0, 4.5)
DPI = 100  # 1200 x 450 pixels
MAX_CLASSES = 40
SIZE_BINS = 40


def save_dataset_figure(check: DatasetCheck, path: str | Path) -> Path:
    """Write the figure of ``check`` to ``path`` (PNG); returns it."""
    path = Path(path)
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    classes, sizes = figure.subplots(1, 2, width_ratios=(3, 2))
    counts = sorted(check.instances_per_class.items(), key=lambda item: -item[1])[:MAX_CLASSES]
    names, values = zip(*counts) if counts else ((), ())
    classes.bar(range(len(values)), values, color="tab:blue")
    classes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    shown = f" ({MAX_CLASSES} most frequent of {len(check.instances_per_class)})" if len(
        check.instances_per_class) > MAX_CLASSES else ""
    classes.set_title(f"instances per class{shown}")
    classes.set_xlabel(f"{check.instances} instances in {check.images} images")
    sides = np.sqrt(np.asarray(check.areas, dtype=float))
    sides = sides[sides > 0]
    if sides.size:
        low = max(sides.min(), 1.0)
        bins = np.geomspace(low, max(sides.max(), 2 * low), SIZE_BINS)
        sizes.hist(sides, bins=bins, color="tab:green")
        sizes.set_xscale("log")
    for bound in (SMALL_AREA, LARGE_AREA):
        sizes.axvline(math.sqrt(bound), color="tab:red", linestyle="--", linewidth=1)
    counts = ", ".join(f"{name} {check.instance_sizes[name]}" for name in ("small", "medium", "large"))
    sizes.set_title("instance size")
    sizes.set_xlabel(f"square root of the mask area, pixels ({counts})")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path
