"""A training run as ``sparseinst train`` starts it: a new run from a recipe, or ``resume`` of
the run in ``out_dir``; under ``torchrun`` one call per process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import RunFilesError, SparseInstError
from ..files import output_folder, read_json
from ..progress import SILENT, Progress
from ..recipe import Recipe, load_recipe, stored_recipe
from ..weights.zoo import resolve_weights
from .callbacks import Callbacks
from .distributed import start_process, stop_process
from .run_directory import RECIPE_FILE, STATE_FILE
from .signals import StopRequest
from .trainer import Trainer, TrainResult


def run_recipe(out_dir: Path, overrides: Sequence[str] = ()) -> Recipe:
    """The resolved recipe a run directory was started with, ``overrides`` applied."""
    saved = out_dir / RECIPE_FILE
    data = read_json(saved, f"file (is {out_dir} a run directory?)", RunFilesError)
    return stored_recipe(data, str(saved), overrides)


def train(recipe: str | Path | None, out_dir: Path, *, overrides: Sequence[str] = (), device: str = "cpu",
          resume: bool = False, strict: bool = False, init_from: str | Path | None = None, init_strict: bool = False,
          progress: Progress = SILENT, callbacks: Callbacks | None = None) -> TrainResult:
    """Train (or with ``resume`` continue) the run in ``out_dir``. ``recipe`` may be None when
    resuming (the run's own is used). ``init_from``/``init_strict`` set the recipe's fields of
    those names. ``progress`` shows the run; ``callbacks`` follow it (``callbacks.EVENTS``).
    Ctrl-C stops after the current step, saves and returns a result marked ``interrupted``."""
    if recipe is None and not resume:
        raise SparseInstError("give a recipe, or resume a run directory", setting="recipe")
    if init_from is not None and resume:
        raise SparseInstError("init_from starts a new run; resume continues one from its own checkpoint",
                              setting="init_from")
    if (out_dir / STATE_FILE).is_file() and not resume:
        raise SparseInstError(f"{out_dir} already holds a run; resume it or choose another directory",
                              setting="resume")
    output_folder(out_dir)
    overrides = [*overrides, *([f'model.init_from="{init_from}"'] if init_from is not None else []),
                 *(["model.init_strict=true"] if init_strict else [])]
    process = start_process(device)
    try:
        loaded = run_recipe(out_dir, overrides) if recipe is None else load_recipe(recipe, overrides)
        if not resume and loaded.model.init_from is not None:  # a zoo name: downloaded and converted once
            start = resolve_weights(loaded.model.init_from, progress)
            loaded = loaded.model_copy(update={"model": loaded.model.model_copy(update={"init_from": start})})
        trainer = Trainer.from_recipe(loaded, out_dir, process, strict=strict, initialize=not resume,
                                      progress=progress, callbacks=callbacks)
        if resume:
            trainer.resume()
        with StopRequest() as stop:
            result = trainer.run(stop)
    finally:
        stop_process(process)
    result.is_main = process.is_main
    return result
