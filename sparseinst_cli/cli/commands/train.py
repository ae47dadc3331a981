"""``sparseinst train``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..console import console, err_console, fail
from ..exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED
from ..options import RUNS, DeviceOption, Overrides
from ..progress import ProgressBar
from ..tables import summary_table, transfer_table

if TYPE_CHECKING:
    from ...engine.callbacks import TrainingStart

MAX_PROBLEMS_SHOWN = 10


def train(
    context: typer.Context,
    recipe: Annotated[Optional[str], typer.Argument(  # noqa: UP007 - typer needs Optional
        help="Recipe file or built-in name. With --resume it may be left out (the run's own recipe is used).",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory \\[default: runs/RECIPE].")] = None,  # noqa: UP007
    overrides: Overrides = None,
    device: DeviceOption = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on any missing/corrupt image or malformed annotation "
                                                "instead of skipping it.")] = False,
    init_from: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--init-from", metavar="FILE|NAME",
        help="Start from a trained model (native .safetensors, the authors' .pth/.pkl, or a model name from "
             "'sparseinst models'): what fits is loaded, other classes start fresh (sets model.init_from).")] = None,
    init_strict: Annotated[bool, typer.Option(
        "--init-strict", help="With --init-from: refuse to start if any tensor or class would start fresh.")] = False,
) -> None:
    """Train a model on COCO-format data named in the recipe's \\[data] section.

    Writes checkpoints (model.safetensors for predict/eval, last.pt for --resume), metrics.jsonl,
    the resolved recipe and eval.json to the run directory; with validation data, also
    best.safetensors, the weights of the validation with the highest mask AP (train.patience
    stops the run after that many validations without a higher one). Ctrl-C saves and exits;
    --resume continues exactly where it stopped. Several GPUs or machines: launch with torchrun.

    Examples:
      sparseinst demo-data data/demo && sparseinst train demo --out runs/demo
      sparseinst train my_data.toml --set train.solver.max_iter=20000 --device cuda
      sparseinst train my_data.toml --set train.eval_period=500 --set train.patience=5
      sparseinst train finetune.toml --init-from r50_giam_aug
      sparseinst train --out runs/demo --resume
      torchrun --nproc-per-node 4 -m sparseinst_cli train r50_giam_coco.toml --device cuda
    """
    from ...engine.callbacks import Callbacks
    from ...engine.run_directory import MODEL_FILE
    from ...engine.training import train as train_run

    if recipe is None and (not resume or out is None):
        raise fail("give a RECIPE (or --resume with --out, the run directory to continue)")
    out = out or RUNS / Path(recipe).stem
    callbacks = Callbacks()
    callbacks.add("on_train_start", _report_start)
    with ProgressBar() as progress:
        result = train_run(recipe, out, overrides=overrides or [], device=device, resume=resume, strict=strict,
                           init_from=init_from, init_strict=init_strict, progress=progress, callbacks=callbacks)
    if not result.is_main:
        return
    if result.interrupted:
        err_console.print(f"{result.stopped_by or 'interrupted'} at step {result.step}; saved. Continue with: "
                          f"sparseinst train --out {out} --resume")
        raise typer.Exit(EXIT_TERMINATED if result.stopped_by == "SIGTERM" else EXIT_INTERRUPTED)
    if result.stopped_early is not None:
        console.print(f"stopped early at step {result.stopped_early.step}: {result.stopped_early.patience} "
                      f"validations in a row without a higher mask AP (train.patience={result.stopped_early.patience})")
    console.print(f"trained {result.step} steps: {result.out_dir / MODEL_FILE}")
    if result.metrics:
        console.print(summary_table(result.metrics, f"Validation mask AP at step {result.step} "
                                                    f"({result.metrics['images']} images)"))
    if result.best is not None:
        ap50 = "" if result.best.ap50 is None else f", AP50 {result.best.ap50:.1f}"
        console.print(f"best: mask AP {result.best.ap:.1f}{ap50} at step {result.best.step}: {result.best_path}")
    if result.skipped_images:
        raise fail(f"{len(result.skipped_images)} image(s) could not be read and were skipped: "
                   f"{', '.join(result.skipped_images[:5])}", EXIT_FAILED)


def _report_start(trainer: object, start: TrainingStart) -> None:
    """The data, the resolved solver and what init_from loaded, before the first step."""
    for name, summary in start.datasets.items():
        err_console.print(f"{name}: {summary}")
        problems = summary.problems()
        for line in problems[:MAX_PROBLEMS_SHOWN]:
            err_console.print(f"  [yellow]{line}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            err_console.print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    err_console.print(f"solver: {start.solver}; precision {start.precision}")
    if start.transfer is not None:
        err_console.print(transfer_table(start.transfer))
    if start.step:
        err_console.print(f"resuming {start.out_dir} at step {start.step}")
