"""``sparseinst viz-iam``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import IAM_TOP_K
from ..console import console, err_console, fail, note, renamed
from ..options import (
    RUNS,
    ConfOption,
    DeviceOption,
    ExistOkOption,
    FastOption,
    Overrides,
    WeightsOption,
    former_option,
    run_folder,
)
from ..progress import ProgressBar
from ..tables import iam_table


def parse_channels(text: str | None) -> list[int] | None:
    """"0-7,12" -> [0, ..., 7, 12]; None -> None (every channel)."""
    if text is None:
        return None
    try:
        return [c for part in text.split(",") for c in _span(*part.strip().partition("-")[::2])]
    except ValueError:
        raise fail(f"--channels: expected numbers and ranges like '0-7,12', got '{text}'") from None


def _span(first: str, last: str) -> range:
    return range(int(first), int(last or first) + 1)


def viz_iam(
    context: typer.Context,
    image: Annotated[Optional[Path], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Image to explain (leave out with --dataset).", show_default=False)] = None,
    weights: WeightsOption = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--out", "-o", show_default=False,
        help=f"PNG to write \\[default: IMAGE_iam.png or dataset_iam.png in a new {RUNS / 'viz-iam'}, "
             f"{RUNS / 'viz-iam'}2, ...].")] = None,
    exist_ok: ExistOkOption = False,
    top_k: Annotated[int, typer.Option(help="Instances shown, best first.")] = IAM_TOP_K,
    conf: ConfOption = None,
    dataset: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--dataset", help="COCO JSON: show the mean maps over its images instead (with --images).")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Image folder of --dataset.")] = None,  # noqa: UP007
    channels: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="IAM channels for --dataset, e.g. '0-15,40' (default: all).")] = None,
    per_group: Annotated[bool, typer.Option(help="With --dataset: one cell per Group-IAM group.")] = False,
    max_images: Annotated[Optional[int], typer.Option(help="With --dataset: use at most this many images.")] = None,  # noqa: UP007
    device: DeviceOption = "cpu",
    fast: FastOption = True,
    overrides: Overrides = None,
    score_threshold: Annotated[Optional[float], former_option("--score-threshold", "--conf", min=0, max=1)] = None,  # noqa: UP007
) -> None:
    """Show what the instance activation maps look at (the paper's Figures 4 and 6).

    For one image: a row per kept instance with its mask, class and score, then its activation
    map(s) over the image (all G maps of a Group-IAM instance). With --dataset: the mean map of
    each chosen IAM channel over the dataset, plus a JSON of each map's centre and spread.
    Without --weights, the zoo's default model is used.

    Examples:
      sparseinst viz-iam street.jpg
      sparseinst viz-iam data/demo/val/000001.png --weights runs/demo/model.safetensors
      sparseinst viz-iam --dataset data/demo/val.json --images data/demo/val --weights runs/demo/model.safetensors
    """
    from ...analysis.activation_maps import explain_dataset, explain_image
    from ...data.datasets import CocoInstances
    from ...deploy.backends import ModelSource
    from ...weights.zoo import DEFAULT_MODEL

    conf = renamed(conf, "--conf", score_threshold=score_threshold)
    if (image is None) == (dataset is None) or (dataset is not None and images is None):
        raise fail("give exactly one of IMAGE or --dataset (with --images, the folder of its images)")
    chosen = parse_channels(channels)
    if weights is None:
        weights = DEFAULT_MODEL
        note(f"no --weights given: showing the zoo's default model, {DEFAULT_MODEL}")
    with ProgressBar() as progress:
        predictor = ModelSource(weights, device=device, overrides=tuple(overrides or []), fast=fast).open(
            progress=progress)
        name = f"{image.stem}_iam.png" if image is not None else "dataset_iam.png"
        out = out or run_folder(None, "viz-iam", exist_ok) / name
        if image is not None:
            figure = explain_image(predictor, image, out, top_k=top_k, conf=conf)
            console.print(iam_table(figure, predictor.class_names, image.name))
            console.print(f"figure: {out} ({figure.grid.shape[1]}x{figure.grid.shape[0]})")
            return
        maps = explain_dataset(predictor, CocoInstances(dataset, images), out, channels=chosen, per_group=per_group,
                               max_images=max_images, progress=progress)
    for failure in maps.failures:
        err_console.print(f"[red]skipped:[/] {failure}")
    console.print(f"mean activation of {len(maps.channels)} IAM channel(s) over {maps.images} image(s)")
    console.print(f"figure: {maps.figure}  statistics: {maps.statistics}")
