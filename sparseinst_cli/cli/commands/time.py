"""``sparseinst time``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import TIMING_RUNS, TIMING_WARMUP, Backend, Precision
from ..console import console, fail, note, warn
from ..options import (
    BackendOption,
    DeviceOption,
    DtypeOption,
    ExistOkOption,
    Overrides,
    WeightsOption,
    out_option,
    run_folder,
)
from ..progress import ProgressBar
from ..tables import timing_table


def parse_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise fail(f"--sizes: expected comma-separated integers like 448,512,608,640, got '{text}'") from None


def time_command(
    context: typer.Context,
    recipe: Annotated[Optional[str], typer.Option(  # noqa: UP007 - typer needs Optional
        "--recipe", "-r", help="Recipe (random weights) to time \\[default: the zoo's default model's recipe].")] = None,
    weights: WeightsOption = None,
    compare: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--compare", help="Another recipe or checkpoint to time in the same table (repeatable).")] = None,
    per_module: Annotated[bool, typer.Option(
        "--per-module/--end-to-end", help="Also time backbone, encoder, decoder and post-processing.")] = True,
    sizes: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Shorter sides to time, e.g. 448,512,608,640 (4:3 images) \\[default: each model's own test size].",
        show_default=False)] = None,
    batch: Annotated[int, typer.Option(help="Images per run.")] = 1,
    dtype: DtypeOption = Precision.fp32,
    fast: Annotated[bool, typer.Option(
        "--fast/--plain", help="The fast path predict runs (batch norm folded, NHWC, Winograd), or the model as "
                               "trained.")] = True,
    compile: Annotated[bool, typer.Option("--compile", help="With --fast: torch.compile the model.")] = False,
    variants: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Time each model several ways side by side, e.g. plain,fast,bf16,onnxruntime,openvino (also fp16, "
             "auto, compile), or 'backends': fast, onnxruntime and openvino (where installed); replaces "
             "--fast/--dtype/--backend/--compile. An .onnx model (say an int8 one) runs on onnxruntime, an .xml "
             "one on openvino.")] = None,
    image: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Image to time on (default: a built-in demo scene).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = TIMING_WARMUP,
    runs: Annotated[int, typer.Option(help="Timed runs (median, min, max).")] = TIMING_RUNS,
    threads: Annotated[int, typer.Option(help="CPU threads (0: torch's default).")] = 0,
    out: Annotated[Optional[Path], out_option("time", "timing.json")] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
    device: DeviceOption = "cpu",
    backend: BackendOption = Backend.torch,
    overrides: Overrides = None,
) -> None:
    """Latency and FPS per module (backbone, encoder, decoder, post-processing) and end to end.

    Warm-up, device synchronization (CUDA events on GPU), median/min/max over --runs, several
    sizes in one call; parameters and GFLOPs. Post-processing makes every candidate's mask, the
    most it costs. Without --recipe or --weights, times the zoo's default model's recipe with
    random weights (the speed is the same) on the fast path, at its own test size. Runs that
    spread more than 2x are flagged.

    Examples:
      sparseinst time --per-module
      sparseinst time --recipe r50_giam --sizes 448,512,608,640
      sparseinst time --weights runs/demo/model.safetensors --device cuda --dtype fp16 --batch 32
      sparseinst time --recipe r50_base --compare r50_giam --compare r50_giam_softmax
      sparseinst time --weights model.safetensors --variants plain,fast,bf16,onnxruntime --compare model.int8.onnx
      sparseinst time --weights model.safetensors --variants backends --compare model.int8.xml
    """
    from ...analysis.timing import time_models
    from ...deploy.backends import ModelSource, model_variants
    from ...weights.zoo import DEFAULT_MODEL, find_model

    if recipe and weights:
        raise fail("give --recipe or --weights, not both (and optionally --compare others)")
    if not recipe and not weights:
        default = find_model(DEFAULT_MODEL)
        recipe, overrides = default.recipe, [f"input.min_size_test={default.input_size}", *(overrides or [])]
        note(f"no --recipe or --weights given: timing the zoo's default model, {DEFAULT_MODEL} (recipe {recipe} at "
             f"{default.input_size}), with random weights: the same speed, nothing to download")
    sources = ([recipe] if recipe else []) + ([weights] if weights else []) + list(compare or [])
    options = {"device": device, "overrides": tuple(overrides or []), "backend": backend, "fast": fast, "dtype": dtype,
               "compile": compile}
    out = run_folder(out, "time", exist_ok)
    checkpoints = [weights] if weights else []  # a zoo name is weights here, not the recipe of that name
    with ProgressBar() as progress:
        if variants:
            names = [name.strip() for name in variants.split(",") if name.strip()]
            models = model_variants(sources, names, checkpoints=checkpoints, device=device,
                                    overrides=tuple(overrides or []))
        else:
            models = [ModelSource.parse(source, checkpoint=source in checkpoints or None, **options)
                      for source in sources]
        report = time_models(models, parse_sizes(sizes), image=image, batch=batch, warmup=warmup, runs=runs,
                             per_module=per_module, threads=threads, progress=progress)
        path = report.save(out / "timing.json")
    console.print(timing_table(report))
    for notice in report.notices:
        warn(notice, context)
    console.print(f"timings: {path}")
