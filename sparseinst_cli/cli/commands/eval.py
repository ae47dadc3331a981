"""``sparseinst eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from components.postprocess import MAX_DETECTIONS

from ...analysis.coco_eval import CocoBackend, evaluate_dataset, evaluate_results
from ...deploy.backends import Backend, ModelSource
from ...files import output_folder
from ...inference.batches import DATASET_BATCH_SIZE
from ...inference.predictor import Precision
from ..console import console, err_console, fail, warn
from ..options import (
    RUNS,
    BackendOption,
    BatchOption,
    DataOption,
    DeviceOption,
    DtypeOption,
    FastOption,
    ImagesOption,
    Overrides,
    WeightsOption,
)
from ..progress import ProgressBar
from ..tables import metrics_table, per_class_table


def eval_command(
    context: typer.Context,
    data: DataOption,
    images: ImagesOption = None,
    weights: WeightsOption = None,
    results: Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
        "--results", help="Score this COCO results JSON instead of running a model.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for eval.json and results.json.")] = RUNS / "eval",
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    fast: FastOption = True,
    dtype: DtypeOption = Precision.fp32,
    batch_size: BatchOption = DATASET_BATCH_SIZE,
    size: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--size", min=1, help="Test resize: shorter side (default: the recipe's min_size_test).")] = None,
    max_size: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--max-size", min=1, help="Test resize: cap on the longer side (default: the recipe's max_size_test).")] = None,
    max_detections: Annotated[int, typer.Option(
        "--max-detections", min=1, help=f"Predictions kept and scored per image (COCO: {MAX_DETECTIONS}).")] = MAX_DETECTIONS,
    coco_backend: Annotated[CocoBackend, typer.Option(
        "--coco-backend", help="What computes AP: pycocotools, faster-coco-eval (same numbers, faster; "
                               "pip install 'sparseinst[fast-eval]'), or auto (faster-coco-eval when installed).")
    ] = CocoBackend.auto,
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
    if (weights is None) == (results is None):
        raise fail("give exactly one of --weights (run a model) or --results (score a results file)")
    if weights is not None and images is None:
        raise fail("--weights needs --images, the folder of the images in --data")
    output_folder(out)
    resize = [f"input.min_size_test={size}"] * bool(size) + [f"input.max_size_test={max_size}"] * bool(max_size)
    with ProgressBar() as progress:
        if results is not None:
            evaluation = evaluate_results(data, results, max_detections, coco_backend)
        else:
            model = ModelSource(weights, device=device, backend=backend, fast=fast, dtype=dtype, overrides=(
                *(overrides or []), f"inference.max_detections={max_detections}", *resize))
            evaluation = evaluate_dataset(model, data, images, batch_size, progress, coco_backend)
        paths = evaluation.save(out, with_results=results is None)
    for notice in evaluation.warnings:
        warn(notice, context)
    for failure in evaluation.failures:
        err_console.print(f"[red]skipped:[/] {failure}")
    console.print(metrics_table(evaluation))
    console.print(per_class_table(evaluation))
    console.print("  ".join(f"{p.stem}: {p}" for p in paths))
