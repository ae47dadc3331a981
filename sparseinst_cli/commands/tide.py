"""``sparseinst tide``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..datasets import CocoInstances
from ..errors import console, err_console, fail, user_errors
from ..evaluation import EVAL_BATCH_SIZE, load_ground_truth, load_results, predict_dataset
from ..progress import ImageProgress
from ..tide import BACKGROUND_THRESHOLD, POS_THRESHOLD, TideReport, comparison_rows, tide_analysis
from ..tide_plot import save_summary_plot
from .evaluate import DataOption, ImagesOption
from .options import DeviceOption, check_device, load_predictor


def run_names(paths: list[Path]) -> list[str]:
    """Short distinct names for runs: file stems, or their folders' names when the stems repeat."""
    for naming in (lambda p: p.stem, lambda p: p.parent.name, lambda p: str(p)):
        names = [naming(path) for path in paths]
        if len(set(names)) == len(names) and all(names):
            return names
    return [f"run{i + 1}" for i in range(len(paths))]


def tide(
    data: DataOption,
    results: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP007 - typer needs Optional
        "--results", help="COCO results JSON to analyse (repeat to compare several).")] = None,
    weights: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP007
        "--weights", "-w", help="Checkpoint to run on --data/--images (repeat to compare several).")] = None,
    images: ImagesOption = None,
    names: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Comma-separated names of the runs, in order (default: from the file names).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tide.json and tide.png.")] = Path("runs/tide"),
    pos_threshold: Annotated[float, typer.Option(help="Foreground IoU threshold.")] = POS_THRESHOLD,
    background_threshold: Annotated[float, typer.Option(help="Background IoU threshold.")] = BACKGROUND_THRESHOLD,
    device: DeviceOption = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")] = EVAL_BATCH_SIZE,
) -> None:
    """TIDE error analysis of masks: how much AP50 each error type costs (dAP).

    Six main errors (classification, localization, both, duplicate, background, missed) and two
    special ones (false positives, false negatives), each as the AP gained by fixing only it.
    Several --results or --weights are compared side by side. Writes a table, tide.json and a
    PNG summary plot (tide.png) to --out.

    Examples:
      sparseinst tide --results runs/eval/results.json --data data/demo/val.json
      sparseinst tide --weights runs/a/model.safetensors --weights runs/b/model.safetensors \\
          --data data/demo/val.json --images data/demo/val
    """
    sources = list(results or []) + list(weights or [])
    if not sources or (results and weights):
        raise fail("give one or more --results files, or one or more --weights with --images")
    labels = [n.strip() for n in names.split(",")] if names else run_names(sources)
    if len(labels) != len(sources) or len(set(labels)) != len(labels):
        raise fail(f"--names: need {len(sources)} distinct names, got {names!r}")
    if not 0 < background_threshold <= pos_threshold <= 1:
        raise fail("thresholds: need 0 < --background-threshold <= --pos-threshold <= 1")
    options = {"pos_threshold": pos_threshold, "background_threshold": background_threshold}
    reports: dict[str, TideReport] = {}
    with user_errors():
        ground_truth = load_ground_truth(data)
        if results:
            for label, path in zip(labels, results):
                reports[label] = tide_analysis(ground_truth.dataset, load_results(path, ground_truth), **options)
        else:
            if images is None:
                raise fail("--weights needs --images, the folder of the images in --data")
            check_device(device)
            dataset = CocoInstances(data, images)
            for label, path in zip(labels, weights):
                predictor = load_predictor(path, device, [], dataset_categories=dataset.categories)
                with ImageProgress(f"tide {label}", len(dataset), err_console) as progress:
                    predictions, _, failures = predict_dataset(predictor, dataset, batch_size, progress.advance)
                for failure in failures:
                    err_console.print(f"[red]skipped:[/] {failure}")
                reports[label] = tide_analysis(ground_truth.dataset, predictions, **options)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tide.json").write_text(json.dumps({name: r.to_json() for name, r in reports.items()}, indent=2) + "\n")
    plot = save_summary_plot(reports, out / "tide.png")
    console.print(tide_table(reports))
    console.print(f"report: {out / 'tide.json'}  plot: {plot}")


def tide_table(reports: dict[str, TideReport]) -> Table:
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
