"""``sparseinst time``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...analysis.timing import time_models
from ...deploy.backends import Backend, ModelSource, model_variants
from ...files import output_folder
from ...inference.predictor import Precision
from ..console import console, fail
from ..options import RUNS, BackendOption, DeviceOption, DtypeOption, Overrides
from ..progress import ProgressBar
from ..tables import timing_table


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise fail(f"--sizes: expected comma-separated integers like 448,512,608,640, got '{text}'") from None


def time_command(
    context: typer.Context,
    recipe: Annotated[Optional[str], typer.Option(  # noqa: UP007 - typer needs Optional
        "--recipe", "-r", help="Recipe (random weights) to time.")] = None,
    weights: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--weights", "-w", help="Checkpoint to time (its recipe, its weights).")] = None,
    compare: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--compare", help="Another recipe or checkpoint to time in the same table (repeatable).")] = None,
    per_module: Annotated[bool, typer.Option(
        "--per-module/--end-to-end", help="Also time backbone, encoder, decoder and post-processing.")] = True,
    sizes: Annotated[str, typer.Option(help="Shorter sides to time, e.g. 448,512,608,640 (4:3 images).")] = "640",
    batch: Annotated[int, typer.Option(help="Images per run.")] = 1,
    dtype: DtypeOption = Precision.fp32,
    fast: Annotated[bool, typer.Option(help="Time the optimized model (batch norm folded, NHWC).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="With --fast: torch.compile the model.")] = False,
    variants: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Time each model several ways side by side, e.g. plain,fast,bf16,onnxruntime (also fp16, auto, "
             "compile); replaces --fast/--dtype/--backend/--compile. An .onnx model (say an int8 one) runs "
             "on onnxruntime.")] = None,
    image: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Image to time on (default: a built-in demo scene).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 3,
    runs: Annotated[int, typer.Option(help="Timed runs (median, min, max).")] = 10,
    threads: Annotated[int, typer.Option(help="CPU threads (0: torch's default).")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for timing.json.")] = RUNS / "time",
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    overrides: Overrides = None,
) -> None:
    """Latency and FPS per module (backbone, encoder, decoder, post-processing) and end to end.

    Warm-up, device synchronization (CUDA events on GPU), median/min/max over --runs, several
    sizes in one call; parameters and GFLOPs. Timing hooks attach from outside the model.

    Examples:
      sparseinst time --recipe r50_giam --sizes 448,512,608,640
      sparseinst time --weights runs/demo/model.safetensors --fast --device cuda --dtype fp16 --batch 32
      sparseinst time --recipe r50_base --compare r50_giam --compare r50_giam_softmax
      sparseinst time --weights model.safetensors --variants plain,fast,bf16,onnxruntime --compare model.int8.onnx
    """
    sources = ([recipe] if recipe else []) + ([str(weights)] if weights else []) + list(compare or [])
    if not sources or (recipe and weights):
        raise fail("give --recipe or --weights (and optionally --compare others)")
    options = {"device": device, "overrides": tuple(overrides or []), "backend": backend, "fast": fast, "dtype": dtype,
               "compile": compile}
    output_folder(out)
    with ProgressBar() as progress:
        if variants:
            names = [name.strip() for name in variants.split(",") if name.strip()]
            models = model_variants(sources, names, device=device, overrides=tuple(overrides or []))
        else:
            models = [ModelSource.parse(source, **options) for source in sources]
        report = time_models(models, parse_sizes(sizes), image=image, batch=batch, warmup=warmup, runs=runs,
                             per_module=per_module, threads=threads, progress=progress)
        path = report.save(out / "timing.json")
    console.print(timing_table(report))
    console.print(f"timings: {path}")
