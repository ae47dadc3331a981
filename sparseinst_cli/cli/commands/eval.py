"""``sparseinst eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import DATASET_BATCH_SIZE, Backend, CocoBackend, Precision
from ..console import console, err_console, fail, note, warn
from ..options import (
    BackendOption,
    BatchOption,
    DataOption,
    DeviceOption,
    DtypeOption,
    ExistOkOption,
    FastOption,
    ImagesOption,
    Overrides,
    WeightsOption,
    out_option,
    run_folder,
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
    out: Annotated[Optional[Path], out_option("eval", "eval.json and results.json")] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    fast: FastOption = True,
    dtype: DtypeOption = Precision.fp32,
    batch_size: BatchOption = DATASET_BATCH_SIZE,
    size: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--size", min=1, help="Test resize: shorter side (default: the recipe's min_size_test).")] = None,
    max_size: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--max-size", min=1, help="Test resize: cap on the longer side (default: the recipe's max_size_test).")] = None,
    max_detections: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--max-detections", min=1, show_default=False,
        help="Predictions kept and scored per image \\[default: the model's inference.max_detections; for "
             "--results, COCO's 100].")] = None,
    coco_backend: Annotated[CocoBackend, typer.Option(
        "--coco-backend", help="What computes AP: pycocotools, faster-coco-eval (same numbers, faster; "
                               "pip install 'sparseinst\\[fast-eval]'), or auto (faster-coco-eval when installed).")
    ] = CocoBackend.auto,
    overrides: Overrides = None,
) -> None:
    """COCO mask AP of a model on a COCO-format dataset, or of an existing results file.

    Every candidate is scored, whatever the model's confidence threshold (COCO AP ranks them
    all). Prints AP, AP50, AP75, APs, APm, APl and per-class AP; writes eval.json (metrics) and,
    when a model runs, results.json (COCO results, RLE masks). Without --weights or --results,
    the zoo's default model runs.

    Examples:
      sparseinst eval --weights runs/demo/model.safetensors --data data/demo/val.json --images data/demo/val
      sparseinst eval --weights r50_giam_aug --data coco/val2017.json --images coco/val2017 --device cuda
      sparseinst eval --results runs/eval/results.json --data data/demo/val.json
      sparseinst eval --weights model.int8.xml --backend openvino --data data/demo/val.json --images data/demo/val
    """
    from ...analysis.coco_eval import MAX_DETECTIONS, evaluate_dataset, evaluate_results
    from ...deploy.backends import ModelSource
    from ...weights.zoo import DEFAULT_MODEL

    if weights is not None and results is not None:
        raise fail("give --weights (run a model) or --results (score a results file), not both")
    if results is None and images is None:
        raise fail("running a model needs --images, the folder of the images in --data")
    if weights is None and results is None:
        weights = DEFAULT_MODEL
        note(f"no --weights given: evaluating the zoo's default model, {DEFAULT_MODEL}")
    out = run_folder(out, "eval", exist_ok)
    resize = [f"input.min_size_test={size}"] * bool(size) + [f"input.max_size_test={max_size}"] * bool(max_size)
    detections = [f"inference.max_detections={max_detections}"] * bool(max_detections)
    with ProgressBar() as progress:
        if results is not None:
            evaluation = evaluate_results(data, results, max_detections or MAX_DETECTIONS, coco_backend)
        else:
            model = ModelSource(weights, device=device, backend=backend, fast=fast, dtype=dtype,
                                overrides=(*(overrides or []), *detections, *resize))
            evaluation = evaluate_dataset(model, data, images, batch_size, progress, coco_backend)
        paths = evaluation.save(out, with_results=results is None)
    for notice in evaluation.warnings:
        warn(notice, context)
    for failure in evaluation.failures:
        err_console.print(f"[red]skipped:[/] {failure}")
    console.print(metrics_table(evaluation))
    console.print(per_class_table(evaluation))
    console.print("  ".join(f"{p.stem}: {p}" for p in paths))
