"""``sparseinst predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...data.images import collect_images
from ...deploy.backends import Backend, ModelSource
from ...inference.batches import predict_files
from ...inference.drawing import SHOW_THRESHOLD
from ...inference.predictor import Precision
from ...resources import sample_images
from ..console import console, err_console, fail
from ..exit_codes import EXIT_FAILED
from ..options import (
    RUNS,
    BackendOption,
    DeviceOption,
    DtypeOption,
    FastOption,
    Overrides,
    RecipeOption,
    WeightsOption,
)
from ..progress import ProgressBar
from ..tables import predictions_table


def predict(
    context: typer.Context,
    inputs: Annotated[Optional[list[Path]], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Images or folders of images [default: the bundled sample images].", show_default=False)] = None,
    weights: WeightsOption = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for overlays and JSON.")] = RUNS / "predict",
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    fast: FastOption = True,
    dtype: DtypeOption = Precision.fp32,
    show_threshold: Annotated[float, typer.Option(
        min=0, max=1, help="Overlays draw instances scoring at least this; results.json keeps all.")] = SHOW_THRESHOLD,
    overlays: Annotated[bool, typer.Option(help="Write an overlay PNG per image.")] = True,
    min_score: Annotated[Optional[float], typer.Option(  # noqa: UP007
        min=0, max=1, help="Make masks only for instances scoring at least this (faster; results.json then "
                           "holds only those; COCO evaluation wants them all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for a randomly initialized model (--recipe alone).")] = 0,
) -> None:
    """Segment images: overlay PNGs plus COCO results (RLE masks) in --out.

    Give --weights for a trained or converted checkpoint, or --recipe alone for a randomly
    initialized model (to try the pipeline). Without inputs, the bundled sample images are used.

    Examples:
      sparseinst predict photos/ --weights model.safetensors
      sparseinst predict --recipe demo --out runs/try
      sparseinst predict photos/ --weights model.onnx --backend onnxruntime
    """
    paths, problems = collect_images(inputs) if inputs else (sample_images(), [])
    predictor = ModelSource(weights, recipe, device=device, overrides=tuple(overrides or []), backend=backend,
                            fast=fast, dtype=dtype, seed=seed).open()
    predictor.min_score = min_score
    if recipe is not None:
        err_console.print(f"[yellow]note:[/] recipe '{recipe}' with random weights: predictions are meaningless")
    for problem in problems:
        err_console.print(f"[red]skipped:[/] {problem}")
    if not paths:
        raise fail("no images to predict")
    with ProgressBar() as progress:
        report = predict_files(predictor, paths, out, show_threshold=show_threshold, overlays=overlays,
                               progress=progress)
    console.print(predictions_table(report, show_threshold))
    console.print(f"results: {report.results_path}  summary: {report.summary_path}")
    failed = len(report.failures) + len(problems)
    if failed:
        raise fail(f"{failed} input(s) failed; see the messages above", EXIT_FAILED)
