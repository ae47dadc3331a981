"""``sparseinst predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import DEFAULT_OVERLAP, MIN_TILE, Backend, Precision
from ..console import console, err_console, fail, renamed
from ..exit_codes import EXIT_FAILED
from ..options import (
    BackendOption,
    ConfOption,
    DeviceOption,
    DtypeOption,
    ExistOkOption,
    FastOption,
    Overrides,
    RecipeOption,
    WeightsOption,
    former_option,
    out_option,
    run_folder,
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
    conf: ConfOption = None,
    out: Annotated[Optional[Path], out_option("predict", "overlays and JSON")] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    fast: FastOption = True,
    dtype: DtypeOption = Precision.fp32,
    overlays: Annotated[bool, typer.Option(help="Write an overlay PNG per image and an annotated video per video "
                                                "(--no-overlays: JSON only).")] = True,
    stride: Annotated[int, typer.Option(min=1, help="Videos: predict every N-th frame.")] = 1,
    max_frames: Annotated[Optional[int], typer.Option(  # noqa: UP007
        min=1, help="Videos: stop after this many predicted frames (a camera or stream runs until Ctrl-C).")] = None,
    track: Annotated[bool, typer.Option(
        "--track", help="Videos, cameras and streams: give each instance a track id that holds across frames "
                        "(JSON lines, overlays by id, STEM.tracks.json).")] = False,
    tile: Annotated[Optional[int], typer.Option(  # noqa: UP007
        metavar="SIZE", show_default=False,
        help=f"Images: predict overlapping SIZE x SIZE pixel tiles (SIZE at least {MIN_TILE}) and the whole image, "
             "then merge the instances: small objects in large images, e.g. --tile 640. Results at the original size.")] = None,
    overlap: Annotated[Optional[float], typer.Option(  # noqa: UP007
        metavar="F", show_default=False,
        help=f"With --tile: the fraction of a tile its neighbours share, from 0 to below 1 "
             f"\\[default: {DEFAULT_OVERLAP}].")] = None,
    seed: Annotated[int, typer.Option(help="Seed for a randomly initialized model (--recipe alone).")] = 0,
    show_threshold: Annotated[Optional[float], former_option("--show-threshold", "--conf", min=0, max=1)] = None,  # noqa: UP007
    min_score: Annotated[Optional[float], former_option("--min-score", "--conf", min=0, max=1)] = None,  # noqa: UP007
) -> None:
    """Segment images and videos. For images: an overlay PNG each, results.json (COCO results,
    RLE masks, each naming its image file) and instances.json (a COCO instances file with the
    images' names and sizes, to import into CVAT, Label Studio or FiftyOne as pre-annotations).
    For each video, camera or stream: an annotated MP4 and one JSON line per frame; with --track
    each instance has a track id and STEM.tracks.json sums up the tracks. Instances come best
    first and score at least --conf; an output never replaces an input.

    Give --weights, a checkpoint or a model name ('sparseinst models'), or --recipe alone for a
    randomly initialized model (to try the pipeline). Without inputs, the bundled sample images
    are used. Ctrl-C closes a video being written (it stays playable).

    Examples:
      sparseinst predict photo.jpg --weights r50_giam_aug
      sparseinst predict photos/ --weights runs/demo/model.safetensors --conf 0.5
      sparseinst predict street.mp4 --weights r50_giam_aug --stride 2
      sparseinst predict street.mp4 --weights r50_giam_aug --track
      sparseinst predict 0 --weights model.safetensors --max-frames 300     # the first camera
      sparseinst predict photos/ --weights model.onnx --backend onnxruntime
      sparseinst predict photos/ --weights model.xml --backend openvino
      sparseinst predict photos/ --weights model.safetensors --backend auto     # the fastest here, same instances
      sparseinst predict aerial.jpg --weights model.safetensors --tile 640 --overlap 0.2
    """
    from ...deploy.backends import ModelSource
    from ...inference.batches import predict_files
    from ...inference.tiling import check_tiling
    from ...inference.video import collect_sources, predict_videos
    from ...resources import sample_images

    conf = renamed(conf, "--conf", show_threshold=show_threshold, min_score=min_score)
    paths, videos, problems = collect_sources(inputs) if inputs else (sample_images(), [], [])
    for problem in problems:
        err_console.print(f"[red]skipped:[/] {problem}")
    if not paths and not videos:
        raise fail("no images or videos to predict")
    if track and not videos:
        raise fail("--track follows objects through video frames; give a video, a camera index or a stream URL "
                   "(for a sequence of images: Predictor.track(paths) in Python)")
    if overlap is not None and tile is None:
        raise fail("--overlap is the share of a tile its neighbours share; give --tile SIZE too")
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    if tile is not None:
        if not paths:
            raise fail("--tile splits large images into tiles; videos, cameras and streams are predicted whole")
        check_tiling(tile, overlap)
    out = run_folder(out, "predict", exist_ok)
    model = ModelSource(weights, recipe, device=device, overrides=tuple(overrides or []), backend=backend, fast=fast,
                        dtype=dtype, seed=seed)
    with ProgressBar() as progress:
        predictor = model.open(progress=progress)
        if recipe is not None:
            err_console.print(f"[yellow]note:[/] recipe '{recipe}' with random weights: predictions are meaningless")
        report = predict_files(predictor, paths, out, conf=conf, overlays=overlays, tile=tile, overlap=overlap,
                               progress=progress) if paths else None
        clips = predict_videos(predictor, videos, out, stride=stride, max_frames=max_frames, conf=conf,
                               overlays=overlays, track=track, progress=progress)
    if report is not None:
        console.print(predictions_table(report))
        console.print(f"results: {report.results_path}  COCO instances: {report.instances_path}  "
                      f"summary: {report.summary_path}")
    if clips:
        console.print(videos_table(clips))
    failed = (len(report.failures) if report else 0) + sum(bool(c.error) for c in clips) + len(problems)
    if failed:
        raise fail(f"{failed} input(s) failed; see the messages above", EXIT_FAILED)
