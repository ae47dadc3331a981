"""The files of a training run, and putting them right after a kill.

A run directory holds:

- ``last.pt``: everything ``--resume`` needs (weights, EMA, optimizer, schedule, scaler, step, RNG);
- ``model.safetensors``: the latest weights (the EMA's when kept) as a native checkpoint;
- ``best.safetensors``: the weights of the validation with the highest mask AP so far, in the
  same format, its step and AP in the metadata;
- ``recipe.json``: the resolved recipe (solver in concrete steps);
- ``run.json``: the code version, the command, the data sizes, the solver's resolution, what
  ``init_from`` loaded, the best validation (``best``) and an early stop (``stopped_early``);
- ``metrics.jsonl``: mean losses over each log window, learning rate and throughput, and each
  evaluation (``run_log.RunLog``);
- ``eval.json``: the last evaluation; ``curves.png``: the curves of ``metrics.jsonl``.

Every file is written atomically. Only the main process writes (under ``torchrun``, rank 0).
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..analysis.coco_eval import EVAL_FILE
from ..checkpoint import read_checkpoint, save_checkpoint
from ..errors import RunFilesError
from ..files import atomic_write, remove_stale_temporaries, write_json
from ..recipe import Recipe
from .curves import save_curves
from .run_log import METRICS_FILE, RUN_FILE

STATE_FILE = "last.pt"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
RECIPE_FILE = "recipe.json"
STATE_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "rng", "cuda_rng", "dataset_size")


class RunDirectory:
    """The files of one run in ``path``; ``writes`` is False on processes that must not write."""

    def __init__(self, path: str | Path, *, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def best(self) -> Path:
        return self.path / BEST_FILE

    def start(self, recipe: Recipe, record: Mapping[str, Any], *, resumed: bool = False) -> None:
        """Remove what an interrupted write left (and, unless ``resumed``, a ``best.safetensors``
        no run of this directory's ``last.pt`` chose), then write ``recipe.json`` and ``run.json``;
        a resumed run keeps the record of what ``init_from`` loaded when it started."""
        if not self.writes:
            return
        remove_stale_temporaries(self.path)
        if not resumed:
            self.best.unlink(missing_ok=True)
        write_json(self.path / RECIPE_FILE, recipe.dump())
        run = {"sparseinst": _package_version(), "git_commit": _git_commit(), "command": sys.argv,
               "torch": torch.__version__, "python": platform.python_version(), **record}
        previous = self.path / RUN_FILE
        if "init_from" not in run and previous.is_file():
            started = json.loads(previous.read_text()).get("init_from")
            if started is not None:
                run["init_from"] = started
        write_json(previous, run)

    def save_model(self, model: torch.nn.Module, recipe: Recipe, categories: list[dict], *, step: int,
                   ema: bool) -> None:
        if self.writes:
            save_checkpoint(self.model, model, recipe, categories, {"step": str(step), "weights": "ema" if ema else "live"})

    def save_best(self, model: torch.nn.Module, recipe: Recipe, categories: list[dict], *, step: int, ema: bool,
                  ap: float, ap50: float | None) -> None:
        """``best.safetensors``: ``model`` as ``save_model`` writes it, with its validation's AP."""
        if self.writes:
            save_checkpoint(self.best, model, recipe, categories, {"step": str(step), "weights": "ema" if ema else "live",
                                                                   "AP": repr(ap), "AP50": repr(ap50)})

    def read_best(self) -> dict[str, Any] | None:
        """The step, AP and AP50 ``best.safetensors`` was written with; None without a readable one."""
        try:
            metadata = read_checkpoint(self.best).metadata
            return {"step": int(metadata["step"]), "AP": float(metadata["AP"]),
                    "AP50": None if metadata.get("AP50", "None") == "None" else float(metadata["AP50"])}
        except Exception:  # noqa: BLE001 - missing, broken, or written without an AP: no best to keep
            return None

    def record(self, **fields: Any) -> None:
        """Set ``fields`` in ``run.json`` (a None value removes the field)."""
        if not self.writes:
            return
        path = self.path / RUN_FILE
        run = json.loads(path.read_text()) if path.is_file() else {}
        for key, value in fields.items():
            if value is None:
                run.pop(key, None)
            else:
                run[key] = value
        write_json(path, run)

    def save_state(self, state: dict[str, Any]) -> None:
        if self.writes:
            atomic_write(self.state, lambda tmp: torch.save(state, tmp))

    def read_state(self, device: torch.device) -> dict[str, Any]:
        """``last.pt``, checked to be a training state with every entry ``resume`` reads."""
        if not self.state.is_file():
            raise RunFilesError(f"{self.state}: nothing to resume from (no checkpoint in {self.path})")
        try:
            state = torch.load(self.state, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - text, truncated or foreign files raise many types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunFilesError(f"{self.state}: not a readable training state ({reason})") from None
        missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
        if missing:
            raise RunFilesError(f"{self.state}: not a complete training state (missing {', '.join(missing)})")
        return state

    def level(self, step: int, save_model: Callable[[], None]) -> None:
        """After a kill the files may be a checkpoint apart: ``model.safetensors`` is rewritten
        (``save_model``) unless it is at ``step``, and ``metrics.jsonl`` loses the lines logged
        after it."""
        if not self.writes:
            return
        model_step = None
        with contextlib.suppress(Exception):  # a missing or broken model file is simply rewritten
            model_step = int(read_checkpoint(self.model).metadata.get("step", -1))
        if model_step != step:
            save_model()
        metrics = self.path / METRICS_FILE
        if metrics.is_file():
            kept = [line for line in metrics.read_text().splitlines() if _logged_step(line) <= step]
            atomic_write(metrics, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))

    def save_evaluation(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self.writes:
            write_json(self.path / EVAL_FILE, {"step": step, **metrics})

    def read_evaluation(self, step: int) -> dict[str, Any]:
        """The evaluation ``save_evaluation`` wrote at ``step``; {} without one."""
        with contextlib.suppress(Exception):  # missing, unreadable, or of another step
            saved = json.loads((self.path / EVAL_FILE).read_text())
            if saved.pop("step") == step:
                return saved
        return {}

    def draw_curves(self) -> None:
        if self.writes:
            save_curves(self.path)


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line (infinite for a line cut short by a kill)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sparseinst")
    except PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
