"""A PNG of a training run's curves, read from its ``metrics.jsonl``.

Three panels over optimizer steps: every loss term and the total (log scale, raw values as faint
lines and their smoothed trend on top), the learning rate, and the validation mask AP and AP50 of
each evaluation, as markers (with their values written beside them when there are few). The
best validation (the first with the highest AP, whose weights ``best.safetensors`` holds) is a
star, and an early stop (``run.json``'s ``stopped_early``) a dashed line across the panels.
Drawing uses matplotlib's Agg canvas directly, so no global backend is set.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..defaults import CURVES_FILE
from ..errors import RunFilesError
from ..files import atomic_write, not_found, output_file
from .run_log import METRICS_FILE, RUN_FILE

FIGURE_INCHES = (15.0, 4.5)
DPI = 100  # 1500 x 450 pixels
SMOOTHING = 0.8  # weight of the past in the exponential moving average, per logged record
RAW_ALPHA = 0.25
MARKER_SIZE = 7
MIN_STEP_SPAN = 4  # steps across the x axis at least
STEP_TICKS = (1, 2, 5, 10)  # step tick spacings allowed, times a power of ten
FEW_RECORDS = 20  # series with fewer records get a marker at each, so a lone record shows
LABELLED_EVALUATIONS = 8  # evaluations up to which each AP value is written by its marker
VALUE_OFFSET = 7  # points between a marker and its value: AP50 above (the higher), AP below
BEST_COLOR, BEST_SIZE = "gold", 18  # the star on the best validation
STOP_COLOR = "tab:red"  # the line of an early stop


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
    figure = curves_figure(series, evaluations, str(Path(run_dir)), stopped_early=_early_stop(run_dir))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _early_stop(run_dir: str | Path) -> tuple[int, int] | None:
    """The step and patience of ``run.json``'s ``stopped_early``; None without one."""
    with contextlib.suppress(Exception):  # no run.json, or not one of a run that stopped early
        stop = json.loads((Path(run_dir) / RUN_FILE).read_text())["stopped_early"]
        return int(stop["step"]), int(stop["patience"])
    return None


def best_evaluation(evaluations: list[tuple[int, dict]]) -> tuple[int, float] | None:
    """The step and AP of the first evaluation with the highest AP; None without an AP."""
    scored = [(step, float(metrics["AP"])) for step, metrics in evaluations
              if isinstance(metrics.get("AP"), (int, float)) and np.isfinite(metrics["AP"])]
    return max(scored, key=lambda item: item[1]) if scored else None  # max keeps the first of equals


def curves_figure(series: dict[str, list[tuple[int, float]]], evaluations: list[tuple[int, dict]],
                  title: str, *, stopped_early: tuple[int, int] | None = None) -> Figure:
    """The three panels of ``read_metrics``'s ``series`` and ``evaluations`` on an Agg canvas;
    ``stopped_early``: the step and patience of an early stop, drawn as a line."""
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, lr_axes, ap_axes = figure.subplots(1, 3, width_ratios=(2, 1, 1), sharex=True)
    _loss_panel(loss_axes, series)
    if "lr" in series:
        steps, values = np.array(series["lr"]).T
        lr_axes.plot(steps, values, color="tab:purple", marker=_marker(steps))
    lr_axes.set(title="learning rate", xlabel="step")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    _evaluation_panel(ap_axes, evaluations)
    first, last = loss_axes.dataLim.intervalx
    if last - first < MIN_STEP_SPAN:  # a step or two: show a few whole steps around them
        loss_axes.set_xlim(max(0.0, first - MIN_STEP_SPAN / 2), last + MIN_STEP_SPAN / 2)
    loss_axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=STEP_TICKS))  # shared by the three panels
    if stopped_early is not None:
        step, patience = stopped_early
        for axes in (loss_axes, lr_axes, ap_axes):
            axes.axvline(step, color=STOP_COLOR, linestyle="--", linewidth=1.2, zorder=1)  # behind the data
        loss_axes.annotate(f"stopped early at step {step}\n({patience} validations without a higher AP)",
                           (step, 1), xycoords=("data", "axes fraction"), xytext=(-4, -4),
                           textcoords="offset points", ha="right", va="top", fontsize=8, color=STOP_COLOR)
        title = f"{title}: stopped early at step {step}"
    figure.suptitle(title)
    return figure


def _loss_panel(axes: Axes, series: dict[str, list[tuple[int, float]]]) -> None:
    """Each loss term and the total: raw (faint) and smoothed, on a log axis."""
    for name in sorted(name for name in series if name == "loss" or name.startswith("loss_")):
        steps, values = np.array(series[name]).T
        line, = axes.plot(steps, values, alpha=RAW_ALPHA, linewidth=0.8)
        axes.plot(steps, smooth(values), color=line.get_color(), linewidth=1.6, marker=_marker(steps),
                  label=name.removeprefix("loss_") if name != "loss" else "total")
    axes.set_yscale("log")
    axes.set(title="losses", xlabel="step")
    axes.legend(fontsize=8)


def _evaluation_panel(axes: Axes, evaluations: list[tuple[int, dict]]) -> None:
    """AP and AP50 of each evaluation as markers, their values written by them when few."""
    if evaluations:
        steps = [step for step, _ in evaluations]
        for key, marker, side in (("AP", "o", -1), ("AP50", "s", 1)):
            values = [metrics.get(key, float("nan")) for _, metrics in evaluations]
            line, = axes.plot(steps, values, marker=marker, markersize=MARKER_SIZE, label=key)
            for step, value in zip(steps, values) if len(steps) <= LABELLED_EVALUATIONS else ():
                axes.annotate(f"{value:.1f}", (step, value), xytext=(0, side * VALUE_OFFSET),
                              textcoords="offset points", ha="center", va="bottom" if side > 0 else "top",
                              fontsize=8, color=line.get_color())
        best = best_evaluation(evaluations)
        if best is not None:
            step, value = best
            axes.plot([step], [value], marker="*", markersize=BEST_SIZE, color=BEST_COLOR, markeredgecolor="black",
                      linestyle="none", zorder=3, label=f"best AP {value:.1f} at step {step}")
        axes.legend(fontsize=8, loc="upper left")
    else:
        axes.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=axes.transAxes)
    axes.set(title="validation mask AP", xlabel="step", ylim=(0, 100))


def _marker(steps: np.ndarray) -> str:
    """A small dot at each record of a short series, none on a long one."""
    return "." if len(steps) < FEW_RECORDS else ""


def smooth(values: np.ndarray, beta: float = SMOOTHING) -> np.ndarray:
    """The bias-corrected exponential moving average of ``values`` (n,): at record t the weighted
    mean of the records up to t, weights beta ** age, so it starts at the first value. Positive
    series (losses on a log axis) are averaged in log space, a geometric mean, so one large early
    value does not hold the trend far above the data."""
    positive = bool(np.all(values > 0))
    series = np.log(values) if positive else np.asarray(values, dtype=float)
    averaged = np.empty(len(series))
    running = 0.0
    for t, value in enumerate(series):
        running = beta * running + (1 - beta) * value
        averaged[t] = running / (1 - beta ** (t + 1))
    return np.exp(averaged) if positive else averaged
