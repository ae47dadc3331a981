"""``sparseinst time``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from ..demo_data import render_image
from ..errors import console, err_console, fail, user_errors
from ..images import read_image
from ..inference import INFERENCE_DTYPES, Predictor
from ..timing import (
    STAGES,
    UNATTRIBUTED,
    Timing,
    device_name,
    time_predictor,
    timing_size,
    unattributed_fraction,
)
from .options import BackendOption, DeviceOption, Overrides, check_device, load_predictor

TIMING_IMAGE_SIZE = (480, 640)  # the built-in test image (a demo-data scene), resized to each size


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise fail(f"--sizes: expected comma-separated integers like 448,512,608,640, got '{text}'") from None
    if not sizes or any(s < 32 for s in sizes):
        raise fail(f"--sizes: every size must be at least 32, got '{text}'")
    return sizes


def time_command(
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
    dtype: Annotated[str, typer.Option(help="fp32, fp16 or bf16 (autocast).")] = "fp32",
    fast: Annotated[bool, typer.Option(help="Time the optimized model (batch norm folded, NHWC).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="With --fast: torch.compile the model.")] = False,
    image: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Image to time on (default: a built-in demo scene).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 3,
    runs: Annotated[int, typer.Option(help="Timed runs (median, min, max).")] = 10,
    threads: Annotated[int, typer.Option(help="CPU threads (0: torch's default).")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for timing.json.")] = Path("runs/time"),
    device: DeviceOption = "cpu",
    backend: BackendOption = "torch",
    overrides: Overrides = None,
) -> None:
    """Latency and FPS per module (backbone, encoder, decoder, post-processing) and end to end.

    Warm-up, device synchronization (CUDA events on GPU), median/min/max over --runs, several
    sizes in one call; parameters and GFLOPs. Timing hooks attach from outside the model.

    Examples:
      sparseinst time --recipe r50_giam --sizes 448,512,608,640
      sparseinst time --weights runs/demo/model.safetensors --fast --device cuda --dtype fp16 --batch 32
      sparseinst time --recipe r50_base --compare r50_giam --compare r50_giam_softmax
    """
    models = ([recipe] if recipe else []) + ([str(weights)] if weights else []) + list(compare or [])
    if not models or (recipe and weights):
        raise fail("give --recipe or --weights (and optionally --compare others)")
    if dtype not in INFERENCE_DTYPES:
        raise fail(f"--dtype: expected one of {', '.join(INFERENCE_DTYPES)}, got '{dtype}'")
    if batch < 1 or runs < 1 or warmup < 0:
        raise fail("--batch and --runs must be at least 1, --warmup at least 0")
    if compile and not fast:
        raise fail("--compile needs --fast")
    exported_as_is = not (fast or dtype != "fp32" or recipe)
    if backend == "onnxruntime" and not (exported_as_is and all(_is_checkpoint(c) for c in compare or [])):
        raise fail("--backend onnxruntime times checkpoints (--weights, --compare FILE) as exported, "
                   "without --fast or --dtype")
    check_device(device)
    if threads:
        torch.set_num_threads(threads)
    shorter_sides = parse_sizes(sizes)
    timings: list[Timing] = []
    with user_errors():
        picture = read_image(image) if image else render_image(0, "val", 1, TIMING_IMAGE_SIZE).image
        for source in models:
            predictor = _load(source, device, overrides or [], backend)
            predictor = predictor.optimize(dtype, compile) if fast else predictor.use_precision(dtype)
            name = Path(source).stem + (" (fast)" if fast else "") + (" (onnxruntime)" if backend != "torch" else "")
            for short in shorter_sides:
                size = timing_size(short, max(predictor.recipe.input.max_size_test, short))
                err_console.print(f"timing {name} at {size[0]}x{size[1]} ...")
                timings.append(time_predictor(predictor, picture, name=name, size=size, batch=batch, warmup=warmup,
                                              runs=runs, per_module=per_module and not compile and backend == "torch"))
    out.mkdir(parents=True, exist_ok=True)
    record = {"device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "timings": [t.to_json() for t in timings]}
    (out / "timing.json").write_text(json.dumps(record, indent=2) + "\n")
    console.print(timing_table(timings, record["device"]))
    console.print(f"timings: {out / 'timing.json'}")


def _is_checkpoint(source: str) -> bool:
    """A model file (else a recipe name or path)."""
    return source.endswith((".safetensors", ".onnx"))


def _load(source: str, device: str, overrides: list[str], backend: str) -> Predictor:
    if _is_checkpoint(source):
        return load_predictor(Path(source), device, overrides, backend)
    return Predictor.from_recipe(source, device, overrides)


def timing_table(timings: list[Timing], machine: str) -> Table:
    per_module = any(UNATTRIBUTED in t.modules for t in timings)
    stages = (*STAGES, UNATTRIBUTED) if per_module else ()
    dtypes = ", ".join(sorted({t.dtype for t in timings}))
    table = Table(title=f"Latency in ms, median ({machine}, {torch.get_num_threads()} threads, {dtypes})")
    table.add_column("model")
    table.add_column("input", justify="right")
    for stage in stages:
        table.add_column("post" if stage == "postprocess" else stage, justify="right")
    for column in ("total", "FPS", "GFLOPs"):
        table.add_column(column, justify="right")
    for t in timings:
        batch = f"x{t.batch}" if t.batch > 1 else ""
        table.add_row(t.name if len(dtypes) < 5 else f"{t.name} {t.dtype}", f"{t.input_size[0]}x{t.input_size[1]}{batch}",
                      *(f"{t.modules[s].median_ms:.1f}" if s in t.modules else "-" for s in stages),
                      f"{t.end_to_end.median_ms:.1f}", f"{t.fps:.1f}", f"{t.gflops:.1f}")
    notes = [f"{t.name}: {t.parameters / 1e6:.1f} M parameters" for t in {t.name: t for t in timings}.values()]
    if per_module:
        worst = max(unattributed_fraction(t) for t in timings if UNATTRIBUTED in t.modules)
        notes.append(f"'other' is time outside the stages: at most {100 * worst:.1f}% of the total")
    table.caption = "; ".join(notes)
    return table
