"""``sparseinst tide``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import (
    DATASET_BATCH_SIZE,
    TIDE_BACKGROUND_THRESHOLD,
    TIDE_POS_THRESHOLD,
)
from ..console import console, fail
from ..options import (
    BatchOption,
    DataOption,
    DeviceOption,
    ExistOkOption,
    FastOption,
    ImagesOption,
    out_option,
    run_folder,
)
from ..progress import ProgressBar
from ..tables import tide_table


def tide(
    context: typer.Context,
    data: DataOption,
    results: Annotated[Optional[list[Path]], typer.Option(  # noqa: UP007 - typer needs Optional
        "--results", help="COCO results JSON to analyse (repeat to compare several).")] = None,
    weights: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--weights", "-w", metavar="FILE|NAME",
        help="Checkpoint or zoo model name to run on --data/--images (repeat to compare several).")] = None,
    images: ImagesOption = None,
    names: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Comma-separated names of the runs, in order (default: from the file names).")] = None,
    out: Annotated[Optional[Path], out_option("tide", "tide.json and tide.png")] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
    pos_threshold: Annotated[float, typer.Option(help="Foreground IoU threshold.")] = TIDE_POS_THRESHOLD,
    background_threshold: Annotated[float, typer.Option(help="Background IoU threshold.")] = TIDE_BACKGROUND_THRESHOLD,
    device: DeviceOption = "cpu",
    fast: FastOption = True,
    batch_size: BatchOption = DATASET_BATCH_SIZE,
) -> None:
    """TIDE error analysis of masks: how much AP50 each error type costs (dAP).

    Six main errors (classification, localization, both, duplicate, background, missed) and two
    special ones (false positives, false negatives), each as the AP gained by fixing only it.
    Several --results or --weights are compared side by side. Writes a table, tide.json and a
    PNG summary plot (tide.png).

    Examples:
      sparseinst tide --results runs/eval/results.json --data data/demo/val.json
      sparseinst tide --weights runs/a/model.safetensors --weights runs/b/model.safetensors \\
          --data data/demo/val.json --images data/demo/val
    """
    from ...analysis.tide import analyse_runs
    from ...analysis.tide_plot import save_tide
    from ...deploy.backends import ModelSource

    if bool(results) == bool(weights):
        raise fail("give one or more --results files, or one or more --weights with --images")
    out = run_folder(out, "tide", exist_ok)
    with ProgressBar() as progress:
        models = [ModelSource(source, device=device, fast=fast) for source in weights or []]
        reports = analyse_runs(data, results=results or [], models=models, images=images,
                               names=[n.strip() for n in names.split(",")] if names else None,
                               pos_threshold=pos_threshold, background_threshold=background_threshold,
                               batch_size=batch_size, progress=progress)
        report_path, plot_path = save_tide(reports, out)
    console.print(tide_table(reports))
    console.print(f"report: {report_path}  plot: {plot_path}")
