"""The tables commands print. The reports they show come from modules that load torch, so
those are imported where a table is made, after the work: a command's help stays instant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ..analysis.activation_maps import IAMFigure
    from ..analysis.coco_eval import Evaluation
    from ..analysis.mask_ceiling import MaskCeiling
    from ..analysis.tide import TideReport
    from ..analysis.timing import TimingReport
    from ..data.check import DatasetCheck
    from ..engine.transfer import TransferReport
    from ..inference.batches import PredictReport
    from ..inference.video import VideoReport

MAX_NAMES_SHOWN = 6


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(metrics: dict, title: str) -> Table:
    """AP, AP50, AP75, APs, APm, APl in one row ("-" where an area range has no objects)."""
    from ..analysis.coco_eval import SUMMARY_KEYS

    table = Table(title=title)
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    table.add_row(*(_cell(metrics[key]) for key in SUMMARY_KEYS))
    return table


def metrics_table(evaluation: Evaluation) -> Table:
    return summary_table(evaluation.metrics,
                         f"Mask AP ({len(evaluation.image_ids)} images, {len(evaluation.results)} predictions)")


def per_class_table(evaluation: Evaluation) -> Table:
    table = Table(title="Per-class mask AP")
    table.add_column("class")
    table.add_column("AP", justify="right")
    for name, value in evaluation.metrics["per_class"].items():
        table.add_row(name, _cell(value))
    return table


def predictions_table(report: PredictReport) -> Table:
    table = Table(title=f"Predictions (instances scoring ≥ {report.conf})")
    for column in ("image", "size", "instances", "ms"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for entry in report.images:
        size = f"{entry.width}×{entry.height}" if entry.height else "-"
        table.add_row(escape(entry.file_name), size, str(entry.instances),
                      f"{entry.milliseconds:.0f}" if not entry.error else "[red]failed")
    return table


def timing_table(report: TimingReport) -> Table:
    from ..analysis.timing import STAGES, UNATTRIBUTED, unattributed_fraction

    timings = report.timings
    per_module = any(UNATTRIBUTED in t.modules for t in timings)
    stages = (*STAGES, "masks", UNATTRIBUTED) if per_module else ()
    dtypes = ", ".join(sorted({t.dtype for t in timings}))
    table = Table(title=f"Latency in ms, median ({report.device}, {report.threads} threads, {dtypes})")
    table.add_column("model")
    table.add_column("input", justify="right")
    for stage in stages:
        table.add_column("post" if stage == "postprocess" else stage, justify="right")
    for column in ("total", "FPS", "GFLOPs"):
        table.add_column(column, justify="right")
    for t in timings:
        batch = f"x{t.batch}" if t.batch > 1 else ""
        table.add_row(t.name if len(dtypes) < 5 else f"{t.name} {t.dtype}", f"{t.input_size[0]}x{t.input_size[1]}{batch}",
                      *(f"{t.modules[s].median_ms:.1f}" if s in t.modules else "-" for s in stages),
                      f"{t.end_to_end.median_ms:.1f}", f"{t.fps:.1f}", f"{t.gflops:.1f}" if t.gflops else "-")
    notes = [f"{t.name}: {t.parameters / 1e6:.1f} M parameters" for t in {t.name: t for t in timings}.values()
             if t.parameters]  # an onnxruntime model's are not counted
    if per_module:
        worst = max(unattributed_fraction(t) for t in timings if UNATTRIBUTED in t.modules)
        notes.append("'masks' is the part of 'post' that makes the masks at image size and their boxes")
        notes.append(f"'other' is time outside the stages: at most {100 * worst:.1f}% of the total")
    table.caption = "; ".join(notes)
    return table


def tide_table(reports: dict[str, TideReport]) -> Table:
    from ..analysis.tide import comparison_rows

    header, *rows = comparison_rows(reports)
    first = next(iter(reports.values()))
    table = Table(title="TIDE mask errors", caption=f"dAP: AP50 gained by fixing only that error "
                  f"(IoU fg {first.pos_threshold:g}, bg {first.background_threshold:g})")
    table.add_column("")
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def iam_table(figure: IAMFigure, class_names: list[str], image_name: str) -> Table:
    table = Table(title=f"Instances of {image_name}")
    for column in ("IAM channel", "class", "score"):
        table.add_column(column, justify="right")
    for candidate, label, score in zip(figure.candidates, figure.labels, figure.scores):
        table.add_row(str(candidate), class_names[label], f"{score:.3f}")
    return table


def transfer_table(report: TransferReport) -> Table:
    """What init_from loaded, left fresh and did not use, with counts and (some) names."""
    table = Table(title=f"init_from {report.source}", title_justify="left")
    table.add_column("tensors")
    table.add_column("count", justify="right")
    table.add_column("names")
    rows = (("loaded", report.loaded), ("re-initialized", report.reinitialized), ("left unused", report.unused))
    for label, names in rows:
        table.add_row(label, str(len(names)), _names(names))
    if report.class_rows or report.fresh_classes:
        copied = [f"{k}<-{v}" if k != v else k for k, v in report.class_rows.items()]
        table.add_row("class rows copied", str(len(copied)), _names(copied))
        table.add_row("classes fresh", str(len(report.fresh_classes)), _names(report.fresh_classes))
    return table


def _names(names: list[str]) -> str:
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > MAX_NAMES_SHOWN else "")


def dataset_tables(check: DatasetCheck) -> list[Table]:
    """The summary of ``data check`` and, when there are any, its problems by kind."""
    summary = Table(title=f"{check.annotations}", title_justify="left", show_header=False)
    summary.add_column("")
    summary.add_column("", justify="right")
    sizes = check.image_sizes
    instance_sizes = ", ".join(f"{k} {v}" for k, v in check.instance_sizes.items())
    for name, value in (("images", check.images), ("instances", check.instances),
                        ("classes", len(check.instances_per_class)),
                        ("classes without instances", sum(v == 0 for v in check.instances_per_class.values())),
                        ("images without instances", check.images_without_instances),
                        ("crowd regions (left out of training)", check.crowd_regions),
                        ("image height min / median / max",
                         f"{sizes['min_height']} / {sizes['median_height']} / {sizes['max_height']}"),
                        ("image width min / median / max",
                         f"{sizes['min_width']} / {sizes['median_width']} / {sizes['max_width']}"),
                        ("instances small / medium / large", instance_sizes)):
        summary.add_row(name, str(value))
    classes = Table(title="instances per class", title_justify="left")
    classes.add_column("class")
    classes.add_column("instances", justify="right")
    for name, count in check.instances_per_class.items():
        classes.add_row(name, str(count))
    tables = [summary, classes]
    if check.problems:
        problems = Table(title=f"{len(check.problems)} problem(s)", title_justify="left")
        for column in ("kind", "where", "what"):
            problems.add_column(column)
        for issue in sorted(check.problems, key=lambda i: i.kind):
            problems.add_row(issue.kind, issue.name, issue.reason)
        tables.append(problems)
    return tables


def ceiling_table(report: MaskCeiling) -> Table:
    """One row per inference size: the AP ceiling and the share of objects a mask can reach."""
    from ..analysis.coco_eval import SUMMARY_KEYS

    counts = report.instances
    table = Table(title=f"{report.annotations}: mask AP ceiling ({counts['all']} objects: {counts['small']} small, "
                        f"{counts['medium']} medium, {counts['large']} large)", title_justify="left")
    table.add_column("size")
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    table.add_column("IoU >= 0.5: small / medium / large", justify="right")
    for size in report.sizes:
        reached = size.reached["0.5"]
        table.add_row(f"{size.min_size}:{size.max_size}", *(_cell(size.metrics[key]) for key in SUMMARY_KEYS),
                      " / ".join("-" if reached[k] is None else f"{reached[k]:.0f}%" for k in ("small", "medium", "large")))
    return table


def videos_table(reports: list[VideoReport]) -> Table:
    table = Table(title="Videos")
    tracked = any(r.tracks for r in reports)
    columns = ("source", "size", "frames", "frames/s", "source fps", *(("tracks",) if tracked else ()), "outputs")
    for column in columns:
        table.add_column(column, justify="left" if column in ("source", "outputs") else "right")
    for r in reports:
        if r.error:
            table.add_row(r.source, *["-"] * (len(columns) - 2), f"[red]failed:[/] {escape(r.error)}")
            continue
        outputs = ", ".join(str(p) for p in (r.video, r.records, r.tracks) if p)
        outputs += " (interrupted)" if r.interrupted else ""
        tracks = (str(r.track_count if r.track_count is not None else "-"),) if tracked else ()
        table.add_row(r.source, f"{r.width}×{r.height}", str(r.frames), f"{r.frames_per_second:.1f}",
                      f"{r.source_fps:.1f}", *tracks, escape(outputs))
    return table
