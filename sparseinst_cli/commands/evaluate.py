"""``sparseinst eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..datasets import CocoInstances
from ..errors import console, err_console, fail, user_errors
from ..evaluation import (
    COCO_MAX_DETECTIONS,
    EVAL_BATCH_SIZE,
    SUMMARY_KEYS,
    Evaluation,
    evaluate_predictor,
    evaluate_results,
)
from ..progress import ImageProgress
from .options import (
    BackendOption,
    DeviceOption,
    DtypeOption,
    FastOption,
    Overrides,
    WeightsOption,
    check_device,
    load_predictor,
)

DataOption = Annotated[Path, typer.Option("--data", help="COCO instances JSON (the ground truth).", show_default=False)]
ImagesOption = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    "--images", help="Image folder of --data (needed to run a model).")]
ResultsOption = Annotated[Optional[Path], typer.Option(  # noqa: UP007
    "--results", help="Score this COCO results JSON instead of running a model.")]
SizeOption = Annotated[Optional[int], typer.Option(  # noqa: UP007
    "--size", help="Test resize: shorter side (default: the recipe's min_size_test).")]
MaxSizeOption = Annotated[Optional[int], typer.Option(  # noqa: UP007
    "--max-size", help="Test resize: cap on the longer side (default: the recipe's max_size_test).")]
MaxDetectionsOption = Annotated[int, typer.Option(
    "--max-detections", help="Predictions kept and scored per image (COCO: 100).")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")]


def evaluate(
    data: DataOption,
    images: ImagesOption = None,
    weights: WeightsOption = None,
    results: ResultsOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for eval.json and results.json.")] = Path("runs/eval"),
    device: DeviceOption = "cpu",
    backend: BackendOption = "torch",
    fast: FastOption = False,
    dtype: DtypeOption = "fp32",
    batch_size: BatchOption = EVAL_BATCH_SIZE,
    size: SizeOption = None,
    max_size: MaxSizeOption = None,
    max_detections: MaxDetectionsOption = COCO_MAX_DETECTIONS,
    overrides: Overrides = None,
) -> None:
    """COCO mask AP of a checkpoint on a COCO-format dataset, or of an existing results file.

    Prints AP, AP50, AP75, APs, APm, APl and per-class AP; writes eval.json (metrics) and, when a
    model runs, results.json (COCO results, RLE masks) to --out.

    Examples:
      sparseinst eval --weights runs/demo/model.safetensors --data data/demo/val.json --images data/demo/val
      sparseinst eval --weights r50_giam_aug.safetensors --data coco/val2017.json --images coco/val2017 --device cuda
      sparseinst eval --results runs/eval/results.json --data data/demo/val.json
    """
    evaluation = _run(data, images, weights, results, device, backend, batch_size, size, max_size, max_detections,
                      overrides or [], fast, dtype)
    for warning in evaluation.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    for failure in evaluation.failures:
        err_console.print(f"[red]skipped:[/] {failure}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(evaluation.to_json(), indent=2) + "\n")
    if results is None:
        (out / "results.json").write_text(json.dumps(evaluation.results))
    console.print(metrics_table(evaluation))
    console.print(per_class_table(evaluation))
    console.print(f"metrics: {out / 'eval.json'}" + ("" if results else f"  results: {out / 'results.json'}"))


def _run(data: Path, images: Path | None, weights: Path | None, results: Path | None, device: str, backend: str,
         batch_size: int, size: int | None, max_size: int | None, max_detections: int,
         overrides: list[str], fast: bool = False, dtype: str = "fp32") -> Evaluation:
    if (weights is None) == (results is None):
        raise fail("give exactly one of --weights (run a model) or --results (score a results file)")
    if batch_size < 1 or max_detections < 1:
        raise fail("--batch-size and --max-detections must be at least 1")
    with user_errors():
        if results is not None:
            return evaluate_results(data, results, max_detections)
        if images is None:
            raise fail("--weights needs --images, the folder of the images in --data")
        check_device(device)
        dataset = CocoInstances(data, images)
        for problem in dataset.summary.problems():
            err_console.print(f"[red]{problem}")
        overrides = [*overrides, f"inference.max_detections={max_detections}"]
        overrides += [f"input.min_size_test={size}"] if size else []
        overrides += [f"input.max_size_test={max_size}"] if max_size else []
        predictor = load_predictor(weights, device, overrides, backend, fast=fast, dtype=dtype,
                                   dataset_categories=dataset.categories)
        with ImageProgress("eval", len(dataset), err_console) as progress:
            return evaluate_predictor(predictor, dataset, batch_size, progress.advance)


def metrics_table(evaluation: Evaluation) -> Table:
    return summary_table(evaluation.metrics,
                         f"Mask AP ({len(evaluation.image_ids)} images, {len(evaluation.results)} predictions)")


def summary_table(metrics: dict, title: str) -> Table:
    """AP, AP50, AP75, APs, APm, APl in one row ("-" where an area range has no objects)."""
    table = Table(title=title)
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    table.add_row(*(_cell(metrics[key]) for key in SUMMARY_KEYS))
    return table


def per_class_table(evaluation: Evaluation) -> Table:
    table = Table(title="Per-class mask AP")
    table.add_column("class")
    table.add_column("AP", justify="right")
    for name, value in evaluation.metrics["per_class"].items():
        table.add_row(name, _cell(value))
    return table


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
