"""``sparseinst train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from ..datasets import DatasetError
from ..distributed import start_process, stop_process
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, console, err_console, fail, user_errors
from ..recipe import Recipe, apply_override, load_recipe, validate_recipe
from ..trainer import STATE_FILE, StopRequest, Trainer, TrainingError
from ..transfer import TransferReport
from .evaluate import summary_table
from .options import DeviceOption, Overrides

MAX_PROBLEMS_SHOWN = 10
MAX_NAMES_SHOWN = 6


def train(
    recipe: Annotated[Optional[str], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Recipe file or built-in name. With --resume it may be left out (the run's own recipe is used).",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory [default: runs/RECIPE].")] = None,  # noqa: UP007
    overrides: Overrides = None,
    device: DeviceOption = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on any missing/corrupt image or malformed annotation "
                                                "instead of skipping it.")] = False,
    init_from: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--init-from", help="Start from a trained model (native .safetensors, or the authors' .pth/.pkl): "
                            "what fits is loaded, other classes start fresh (sets model.init_from).")] = None,
    init_strict: Annotated[bool, typer.Option(
        "--init-strict", help="With --init-from: refuse to start if any tensor or class would start fresh.")] = False,
) -> None:
    """Train a model on COCO-format data named in the recipe's [data] section.

    Writes checkpoints (model.safetensors for predict/eval, last.pt for --resume), metrics.jsonl,
    the resolved recipe and eval.json to the run directory. Ctrl-C saves and exits; --resume
    continues exactly where it stopped. Several GPUs or machines: launch with torchrun.

    Examples:
      sparseinst demo-data data/demo && sparseinst train demo --out runs/demo
      sparseinst train my_data.toml --set train.solver.max_iter=20000 --device cuda
      sparseinst train finetune.toml --init-from r50_giam_aug.safetensors
      sparseinst train --out runs/demo --resume
      torchrun --nproc-per-node 4 -m sparseinst_cli train r50_giam_coco.toml --device cuda
    """
    if recipe is None and not resume:
        raise fail("give a RECIPE (or --resume with --out to continue a run)")
    if recipe is None and out is None:
        raise fail("--resume without a RECIPE needs --out, the run directory to continue")
    out = out or Path("runs") / Path(recipe).stem
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise fail(f"device '{device}' requested but CUDA is not available")
    if init_from is not None and resume:
        raise fail("--init-from starts a new run; --resume continues one from its own checkpoint")
    overrides = [*(overrides or []), *([f'model.init_from="{init_from}"'] if init_from is not None else []),
                 *(["model.init_strict=true"] if init_strict else [])]
    if (out / STATE_FILE).is_file() and not resume:
        raise fail(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    process = start_process(device)
    try:
        with user_errors():
            try:
                if recipe is None:
                    saved = out / "recipe.json"
                    if not saved.is_file():
                        raise FileNotFoundError(f"{saved}: no such file (is {out} a run directory?)")
                    loaded = _resumed_recipe(saved, overrides)
                else:
                    loaded = load_recipe(recipe, overrides)
                trainer = Trainer(loaded, out, process, strict=strict, console=err_console, initialize=not resume)
                _report_data(trainer)
                _report_start(trainer)
                if resume:
                    trainer.resume()
                    err_console.print(f"resuming {out} at step {trainer.step}")
                with StopRequest() as stop:
                    result = trainer.run(stop)
            except DatasetError as exc:
                raise fail(str(exc)) from None
            except TrainingError as exc:
                raise fail(str(exc), EXIT_FAILED) from None
    finally:
        stop_process(process)
    if not process.is_main:
        return
    if result.interrupted:
        err_console.print(f"interrupted at step {result.step}; saved. Continue with: "
                          f"sparseinst train --out {out} --resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_result(result)
    if result.skipped_images:
        raise fail(f"{len(result.skipped_images)} image(s) could not be read and were skipped: "
                   f"{', '.join(result.skipped_images[:5])}", EXIT_FAILED)


def _resumed_recipe(path: Path, overrides: list[str]) -> Recipe:
    data = json.loads(path.read_text())
    for assignment in overrides:
        apply_override(data, assignment)
    return validate_recipe(data, str(path))


def _report_data(trainer: Trainer) -> None:
    if not trainer.process.is_main:
        return
    for name, dataset in (("train", trainer.train_set), ("val", trainer.val_set)):
        if dataset is None:
            continue
        summary = dataset.summary
        err_console.print(f"{name}: {summary}")
        problems = summary.problems()
        for line in problems[:MAX_PROBLEMS_SHOWN]:
            err_console.print(f"  [yellow]{line}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            err_console.print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")


def _report_start(trainer: Trainer) -> None:
    if not trainer.process.is_main:
        return
    err_console.print(f"solver: {trainer.solver_resolution.summary()}")
    if trainer.transfer is not None:
        err_console.print(transfer_table(trainer.transfer))


def transfer_table(report: TransferReport) -> Table:
    """What init_from loaded, left fresh and did not use, with counts and (some) names."""
    table = Table(title=f"init_from {report.source}", title_justify="left")
    table.add_column("tensors")
    table.add_column("count", justify="right")
    table.add_column("names")
    rows = (("loaded", report.loaded), ("re-initialized", report.reinitialized), ("left unused", report.unused))
    for label, names in rows:
        table.add_row(label, str(len(names)), _names(names))
    if report.class_rows or report.fresh_classes:
        copied = [f"{k}<-{v}" if k != v else k for k, v in report.class_rows.items()]
        table.add_row("class rows copied", str(len(copied)), _names(copied))
        table.add_row("classes fresh", str(len(report.fresh_classes)), _names(report.fresh_classes))
    return table


def _names(names: list[str]) -> str:
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > MAX_NAMES_SHOWN else "")


def _print_result(result) -> None:
    console.print(f"trained {result.step} steps: {result.out_dir / 'model.safetensors'}")
    metrics = result.metrics
    if not metrics:
        return
    console.print(summary_table(metrics, f"Validation mask AP ({metrics['images']} images)"))
