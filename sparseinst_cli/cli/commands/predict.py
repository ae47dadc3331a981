"""``sparseinst predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...deploy.backends import Backend, ModelSource
from ...inference.batches import predict_files
from ...inference.drawing import SHOW_THRESHOLD
from ...inference.predictor import Precision
from ...inference.video import collect_sources, predict_videos
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
from ..tables import predictions_table, videos_table


def predict(
    context: typer.Context,
    inputs: Annotated[Optional[list[str]], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Images, videos, folders of them, camera indices (0) or stream URLs (rtsp://...) \\[default: the "
             "bundled sample images].", show_default=False)] = None,
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
    overlays: Annotated[bool, typer.Option(help="Write an overlay PNG per image and an annotated video per video "
                                                "(--no-overlays: JSON only).")] = True,
    stride: Annotated[int, typer.Option(min=1, help="Videos: predict every N-th frame.")] = 1,
    max_frames: Annotated[Optional[int], typer.Option(  # noqa: UP007
        min=1, help="Videos: stop after this many predicted frames (a camera or stream runs until Ctrl-C).")] = None,
    min_score: Annotated[Optional[float], typer.Option(  # noqa: UP007
        min=0, max=1, help="Make masks only for instances scoring at least this (faster; results.json then "
                           "holds only those; COCO evaluation wants them all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for a randomly initialized model (--recipe alone).")] = 0,
) -> None:
    """Segment images and videos: overlay PNGs plus COCO results (RLE masks) for images, an
    annotated MP4 plus one JSON line per frame for each video, camera or stream, in --out.

    Give --weights for a trained or converted checkpoint, or --recipe alone for a randomly
    initialized model (to try the pipeline). Without inputs, the bundled sample images are used.
    Ctrl-C closes a video being written (it stays playable).

    Examples:
      sparseinst predict photos/ --weights model.safetensors
      sparseinst predict street.mp4 --weights model.safetensors --stride 2
      sparseinst predict 0 --weights model.safetensors --max-frames 300     # the first camera
      sparseinst predict --recipe demo --out runs/try
      sparseinst predict photos/ --weights model.onnx --backend onnxruntime
    """
    paths, videos, problems = collect_sources(inputs) if inputs else (sample_images(), [], [])
    predictor = ModelSource(weights, recipe, device=device, overrides=tuple(overrides or []), backend=backend,
                            fast=fast, dtype=dtype, seed=seed).open()
    predictor.min_score = min_score
    if recipe is not None:
        err_console.print(f"[yellow]note:[/] recipe '{recipe}' with random weights: predictions are meaningless")
    for problem in problems:
        err_console.print(f"[red]skipped:[/] {problem}")
    if not paths and not videos:
        raise fail("no images or videos to predict")
    with ProgressBar() as progress:
        report = predict_files(predictor, paths, out, show_threshold=show_threshold, overlays=overlays,
                               progress=progress) if paths else None
        clips = predict_videos(predictor, videos, out, stride=stride, max_frames=max_frames,
                               show_threshold=show_threshold, overlays=overlays, progress=progress)
    if report is not None:
        console.print(predictions_table(report, show_threshold))
        console.print(f"results: {report.results_path}  summary: {report.summary_path}")
    if clips:
        console.print(videos_table(clips))
    failed = (len(report.failures) if report else 0) + sum(bool(c.error) for c in clips) + len(problems)
    if failed:
        raise fail(f"{failed} input(s) failed; see the messages above", EXIT_FAILED)
