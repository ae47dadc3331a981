"""A PNG of a training run's curves, read from its ``metrics.jsonl``.

Three panels over optimizer steps: every loss term and the total (log scale, raw values as faint
lines and a moving average on top), the learning rate, and the validation mask AP and AP50 of
each evaluation. Drawing uses matplotlib's Agg canvas directly, so no global backend is set.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..defaults import CURVES_FILE
from ..errors import RunFilesError
from ..files import atomic_write, not_found, output_file
from .run_log import METRICS_FILE

FIGURE_INCHES = (15.0, 4.5)
DPI = 100  # 1500 x 450 pixels
SMOOTHING_POINTS = 10  # moving-average window, in logged records
RAW_ALPHA = 0.25


def read_metrics(run_dir: str | Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, dict]]]:
    """The logged scalars (name -> [(step, value)]) and the evaluations ([(step, metrics)])."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunFilesError(f"{not_found(path)} (is {run_dir} a training run directory?)")
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    evaluations: list[tuple[int, dict]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RunFilesError(f"{path}: line {number} is not a metrics record") from None
        if isinstance(record.get("eval"), dict):
            evaluations.append((step, record["eval"]))
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                series[key].append((step, float(value)))
    if not series:
        raise RunFilesError(f"{path}: holds no logged steps")
    return dict(series), evaluations


def save_curves(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Draw the curves of the run in ``run_dir`` to ``path`` (default ``run_dir/curves.png``)."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise RunFilesError(f"{run_dir}: not a run directory (a folder holding {METRICS_FILE})")
    path = output_file(Path(path) if path is not None else Path(run_dir) / CURVES_FILE, (".png",))
    series, evaluations = read_metrics(run_dir)
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, lr_axes, ap_axes = figure.subplots(1, 3, width_ratios=(2, 1, 1), sharex=True)
    losses = sorted(name for name in series if name == "loss" or name.startswith("loss_"))
    for name in losses:
        steps, values = np.array(series[name]).T
        line, = loss_axes.plot(steps, values, alpha=RAW_ALPHA, linewidth=0.8)
        loss_axes.plot(steps, _moving_average(values), color=line.get_color(), linewidth=1.6,
                       label=name.removeprefix("loss_") if name != "loss" else "total")
    loss_axes.set_yscale("log")
    loss_axes.set(title="losses", xlabel="step")
    loss_axes.legend(fontsize=8)
    if "lr" in series:
        steps, values = np.array(series["lr"]).T
        lr_axes.plot(steps, values, color="tab:purple")
    lr_axes.set(title="learning rate", xlabel="step")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if evaluations:
        steps = [step for step, _ in evaluations]
        for key, marker in (("AP", "o"), ("AP50", "s")):
            ap_axes.plot(steps, [metrics.get(key, float("nan")) for _, metrics in evaluations], marker=marker, label=key)
        ap_axes.legend(fontsize=8)
    else:
        ap_axes.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ap_axes.transAxes)
    ap_axes.set(title="validation mask AP", xlabel="step", ylim=(0, 100))
    figure.suptitle(str(Path(run_dir)))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _moving_average(values: np.ndarray) -> np.ndarray:
    window = min(SMOOTHING_POINTS, len(values))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    averaged = (cumulative[window:] - cumulative[:-window]) / window
    return np.concatenate([np.cumsum(values[: window - 1]) / np.arange(1, window), averaged])
