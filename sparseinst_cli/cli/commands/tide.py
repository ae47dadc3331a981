"""``sparseinst tide``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...analysis.tide import BACKGROUND_THRESHOLD, POS_THRESHOLD, analyse_runs
from ...analysis.tide_plot import save_tide
from ...deploy.backends import ModelSource
from ...files import output_folder
from ...inference.batches import DATASET_BATCH_SIZE
from ..console import console, fail
from ..options import (
    RUNS,
    BatchOption,
    DataOption,
    DeviceOption,
    FastOption,
    ImagesOption,
)
from ..progress import ProgressBar
from ..tables import tide_table


def tide(
    context: typer.Context,
    data: DataOption,
    results: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP007 - typer needs Optional
        "--results", help="COCO results JSON to analyse (repeat to compare several).")] = None,
    weights: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP007
        "--weights", "-w", help="Checkpoint to run on --data/--images (repeat to compare several).")] = None,
    images: ImagesOption = None,
    names: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Comma-separated names of the runs, in order (default: from the file names).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tide.json and tide.png.")] = RUNS / "tide",
    pos_threshold: Annotated[float, typer.Option(help="Foreground IoU threshold.")] = POS_THRESHOLD,
    background_threshold: Annotated[float, typer.Option(help="Background IoU threshold.")] = BACKGROUND_THRESHOLD,
    device: DeviceOption = "cpu",
    fast: FastOption = True,
    batch_size: BatchOption = DATASET_BATCH_SIZE,
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
    if bool(results) == bool(weights):
        raise fail("give one or more --results files, or one or more --weights with --images")
    output_folder(out)
    with ProgressBar() as progress:
        models = [ModelSource(path, device=device, fast=fast) for path in weights or []]
        reports = analyse_runs(data, results=results or [], models=models, images=images,
                               names=[n.strip() for n in names.split(",")] if names else None,
                               pos_threshold=pos_threshold, background_threshold=background_threshold,
                               batch_size=batch_size, progress=progress)
        report_path, plot_path = save_tide(reports, out)
    console.print(tide_table(reports))
    console.print(f"report: {report_path}  plot: {plot_path}")
