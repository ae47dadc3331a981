"""A PNG summary of one or more TIDE reports side by side.

Two grouped bar charts share one figure: the six main error types (left) and the two special
errors (right), one bar per report in each group, labelled with its dAP. The legend, under the
panels so that it hides no bar, gives each report's AP50. The image is always ``FIGURE_INCHES`` x
``DPI`` pixels, whatever the number of reports; constrained layout keeps every label inside it.
Drawing uses matplotlib's Agg canvas directly, so no global backend is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_write, write_json
from .tide import ERROR_LABELS, MAIN_ERRORS, SPECIAL_ERRORS, TideReport

FIGURE_INCHES = (12.0, 4.5)
DPI = 100  # so the PNG is 1200 x 450 pixels
GROUP_WIDTH = 0.8  # share of each error type's slot taken by its bars
VALUE_FONT_SIZE = 8
LEGEND_COLUMNS = 4  # reports per legend row
HEADROOM = 1.15  # y-axis top as a multiple of the tallest bar, leaving room for the labels
UPRIGHT_VALUES = 3  # with more reports the bars are too narrow for level labels: they stand on end
STANDING_HEADROOM = 1.3  # HEADROOM for labels on end
MIN_Y_TOP = 1.0  # dAP axis top when every bar is (near) zero
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
          "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def save_summary_plot(reports: Mapping[str, TideReport], path: str | Path, *,
                      title: str = "TIDE mask errors") -> Path:
    """Write the summary PNG of ``reports`` (name -> report, at least one) to ``path``; returns it."""
    figure = summary_figure(reports, title=title)
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


def summary_figure(reports: Mapping[str, TideReport], *, title: str = "TIDE mask errors") -> Figure:
    """The summary of ``reports`` (name -> report, at least one) on an Agg canvas."""
    if not reports:
        raise ValueError("a TIDE summary needs at least one report")
    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    main_axes, special_axes = figure.subplots(1, 2, width_ratios=(len(MAIN_ERRORS), len(SPECIAL_ERRORS) + 1))
    top = max(MIN_Y_TOP, *(v for r in reports.values() for v in (*r.main.values(), *r.special.values())))
    _grouped_bars(main_axes, reports, MAIN_ERRORS, lambda r, k: r.main[k], top)
    _grouped_bars(special_axes, reports, SPECIAL_ERRORS, lambda r, k: r.special[k], top)
    main_axes.set_title("Main errors")
    special_axes.set_title("Special errors")
    main_axes.set_ylabel("dAP (AP50 points)")
    special_axes.set_ylabel("dAP (AP50 points)")
    figure.suptitle(f"{title} (IoU {_thresholds(reports)})")
    figure.legend(*main_axes.get_legend_handles_labels(), loc="outside lower center", fontsize="small",
                  ncols=min(len(reports), LEGEND_COLUMNS))
    return figure


def _grouped_bars(axes: Axes, reports: Mapping[str, TideReport], kinds: tuple[str, ...],
                  value: Callable[[TideReport, str], float], top: float) -> None:
    """One group per error kind, one bar per report, each labelled with its value."""
    width = GROUP_WIDTH / len(reports)
    standing = len(reports) > UPRIGHT_VALUES
    for index, (name, report) in enumerate(reports.items()):
        offset = (index - (len(reports) - 1) / 2) * width
        bars = axes.bar([k + offset for k in range(len(kinds))], [value(report, kind) for kind in kinds],
                        width, label=f"{name} (AP50 {report.ap:.2f})", color=COLORS[index % len(COLORS)])
        axes.bar_label(bars, fmt="%.2f", fontsize=VALUE_FONT_SIZE, padding=2,
                       rotation=90 if standing else 0)
    axes.set_xticks(range(len(kinds)), [ERROR_LABELS[kind] for kind in kinds])
    axes.set_ylim(0.0, top * (STANDING_HEADROOM if standing else HEADROOM))
    axes.grid(axis="y", alpha=0.3)


def _thresholds(reports: Mapping[str, TideReport]) -> str:
    """``fg 0.50 / bg 0.10``, or a note that the reports used different thresholds."""
    pairs = {(r.pos_threshold, r.background_threshold) for r in reports.values()}
    if len(pairs) > 1:
        return "thresholds differ"
    pos, background = pairs.pop()
    return f"fg {pos:.2f} / bg {background:.2f}"


def save_tide(reports: Mapping[str, TideReport], out_dir: Path) -> tuple[Path, Path]:
    """Write ``tide.json`` (every report) and ``tide.png`` (the summary plot) into ``out_dir``."""
    report_path, plot_path = out_dir / "tide.json", out_dir / "tide.png"
    write_json(report_path, {name: r.to_json() for name, r in reports.items()})
    return report_path, save_summary_plot(reports, plot_path)
