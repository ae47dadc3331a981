"""``sparseinst viz-iam``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..datasets import CocoInstances
from ..errors import EXIT_FAILED, console, err_console, fail, user_errors
from ..iam_viz import (
    DEFAULT_SCORE_THRESHOLD,
    DEFAULT_TOP_K,
    NothingToShow,
    dataset_mean_maps,
    image_figure,
    map_statistics,
    mean_maps_figure,
)
from ..images import read_image, write_image
from ..progress import ImageProgress
from .options import DeviceOption, Overrides, check_device, load_predictor


def parse_channels(text: str | None, num_instances: int) -> list[int]:
    """"0-7,12" -> [0, ..., 7, 12]; None -> every channel. Out-of-range channels are an error."""
    if text is None:
        return list(range(num_instances))
    channels: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            channels.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise fail(f"--channels: expected numbers and ranges like '0-7,12', got '{text}'") from None
    bad = [c for c in channels if not 0 <= c < num_instances]
    if bad or not channels:
        raise fail(f"--channels: the model has IAM channels 0-{num_instances - 1}; got {bad or 'none'}")
    return channels


def viz_iam(
    weights: Annotated[Path, typer.Option("--weights", "-w", help="Native checkpoint (.safetensors).",
                                          show_default=False)],
    image: Annotated[Optional[Path], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Image to explain (leave out with --dataset).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--out", "-o", help="PNG to write (default: runs/viz-iam/IMAGE_iam.png or runs/viz-iam/dataset_iam.png).")] = None,
    top_k: Annotated[int, typer.Option(help="Instances shown, best first.")] = DEFAULT_TOP_K,
    score_threshold: Annotated[float, typer.Option(help="Show instances scoring above this.")] = DEFAULT_SCORE_THRESHOLD,
    dataset: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--dataset", help="COCO JSON: show the mean maps over its images instead (with --images).")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Image folder of --dataset.")] = None,  # noqa: UP007
    channels: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="IAM channels for --dataset, e.g. '0-15,40' (default: all).")] = None,
    per_group: Annotated[bool, typer.Option(help="With --dataset: one cell per Group-IAM group.")] = False,
    max_images: Annotated[Optional[int], typer.Option(help="With --dataset: use at most this many images.")] = None,  # noqa: UP007
    device: DeviceOption = "cpu",
    overrides: Overrides = None,
) -> None:
    """Show what the instance activation maps look at (the paper's Figures 4 and 6).

    For one image: a row per kept instance with its mask, class and score, then its activation
    map(s) over the image (all G maps of a Group-IAM instance). With --dataset: the mean map of
    each chosen IAM channel over the dataset, plus a JSON of each map's centre and spread.

    Examples:
      sparseinst viz-iam data/demo/val/000001.png --weights runs/demo/model.safetensors
      sparseinst viz-iam --dataset data/demo/val.json --images data/demo/val --weights runs/demo/model.safetensors
    """
    if (image is None) == (dataset is None):
        raise fail("give exactly one of IMAGE or --dataset (with --images)")
    if dataset is not None and images is None:
        raise fail("--dataset needs --images, the folder of its images")
    if top_k < 1:
        raise fail("--top-k must be at least 1")
    check_device(device)
    with user_errors():
        predictor = load_predictor(weights, device, overrides or [])
        if image is not None:
            _explain_image(predictor, image, out or Path("runs/viz-iam") / f"{image.stem}_iam.png", top_k,
                           score_threshold)
            return
        data = CocoInstances(dataset, images)
        num_instances = predictor.recipe.model.decoder.num_instances
        chosen = parse_channels(channels, num_instances)
        _explain_dataset(predictor, data, chosen, out or Path("runs/viz-iam/dataset_iam.png"), per_group, max_images)


def _explain_image(predictor, image: Path, out: Path, top_k: int, score_threshold: float) -> None:
    try:
        figure = image_figure(predictor, read_image(image), top_k=top_k, score_threshold=score_threshold)
    except NothingToShow as exc:
        raise fail(f"{image}: {exc}", EXIT_FAILED) from None
    write_image(out, figure.grid)
    table = Table(title=f"Instances of {image.name}")
    for column in ("IAM channel", "class", "score"):
        table.add_column(column, justify="right")
    for candidate, label, score in zip(figure.candidates, figure.labels, figure.scores):
        table.add_row(str(candidate), predictor.class_names[label], f"{score:.3f}")
    console.print(table)
    console.print(f"figure: {out} ({figure.grid.shape[1]}x{figure.grid.shape[0]})")


def _explain_dataset(predictor, data: CocoInstances, channels: list[int], out: Path, per_group: bool,
                     max_images: int | None) -> None:
    total = len(data) if max_images is None else min(max_images, len(data))
    with ImageProgress("viz-iam", total, err_console) as progress:
        means, used, failures = dataset_mean_maps(predictor, data, channels, max_images=max_images,
                                                  advance=progress.advance)
    for failure in failures:
        err_console.print(f"[red]skipped:[/] {failure}")
    write_image(out, mean_maps_figure(means, channels, per_group))
    stats = map_statistics(means, channels)
    summary = out.with_suffix(".json")
    summary.write_text(json.dumps({"images": used, "channels": stats}, indent=2) + "\n")
    console.print(f"mean activation of {len(channels)} IAM channel(s) over {used} image(s)")
    console.print(f"figure: {out}  statistics: {summary}")
