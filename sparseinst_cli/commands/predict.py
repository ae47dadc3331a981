"""``sparseinst predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import EXIT_FAILED, console, err_console, fail, user_errors
from ..images import collect_images
from ..inference import Predictor
from ..predict import SHOW_THRESHOLD, ImageReport, predict_files
from ..progress import ImageProgress
from .options import (
    BackendOption,
    DeviceOption,
    DtypeOption,
    FastOption,
    Overrides,
    RecipeOption,
    WeightsOption,
    check_device,
    load_predictor,
)


def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images.", show_default=False)],
    weights: WeightsOption = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for overlays and JSON.")] = Path("runs/predict"),
    device: DeviceOption = "cpu",
    backend: BackendOption = "torch",
    fast: FastOption = False,
    dtype: DtypeOption = "fp32",
    show_threshold: Annotated[
        float, typer.Option(help="Overlays draw instances scoring at least this; results.json keeps all.")
    ] = SHOW_THRESHOLD,
    overlays: Annotated[bool, typer.Option(help="Write an overlay PNG per image.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for a randomly initialized model (--recipe alone).")] = 0,
) -> None:
    """Segment images: overlay PNGs plus COCO results (RLE masks) in --out.

    Give --weights for a trained or converted checkpoint, or --recipe alone for a randomly
    initialized model (to try the pipeline).

    Examples:
      sparseinst predict photos/ --weights model.safetensors
      sparseinst predict samples/shapes.png --recipe r50_giam --out runs/try
      sparseinst predict photos/ --weights model.onnx --backend onnxruntime
    """
    if (weights is None) == (recipe is None):
        raise fail("give exactly one of --weights (a checkpoint) or --recipe (random weights)")
    check_device(device)
    with user_errors():
        paths, problems = collect_images(inputs)
        if weights is not None:
            predictor = load_predictor(weights, device, overrides or [], backend, fast=fast, dtype=dtype)
        else:
            predictor = Predictor.from_recipe(recipe, device, overrides or [], seed=seed)
            err_console.print(f"[yellow]note:[/] recipe '{recipe}' with random weights: predictions are meaningless")
    for problem in problems:
        err_console.print(f"[red]skipped:[/] {problem}")
    if not paths:
        raise fail("no images to predict")

    with ImageProgress("predict", len(paths), err_console) as progress:

        def advance(entry: ImageReport) -> None:
            progress.advance()
            if entry.error:
                progress.console.print(f"[red]failed:[/] {entry.error}")

        with user_errors():
            report = predict_files(
                predictor, paths, out, show_threshold=show_threshold, overlays=overlays, on_image=advance
            )

    table = Table(title=f"Predictions (overlays show score ≥ {show_threshold})")
    for column in ("image", "size", "instances", f"≥ {show_threshold}", "ms"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for entry in report.images:
        size = f"{entry.width}×{entry.height}" if entry.height else "-"
        table.add_row(Path(entry.file_name).name, size, str(entry.instances), str(entry.shown),
                      f"{entry.milliseconds:.0f}" if not entry.error else "[red]failed")
    console.print(table)
    console.print(f"results: {report.results_path}  summary: {report.summary_path}")
    failed = len(report.failures) + len(problems)
    if failed:
        raise fail(f"{failed} input(s) failed; see the messages above", EXIT_FAILED)
