"""Events a training run announces, for code outside the loop to follow it: the command line's
progress display and start report, a user's own logging or early stopping.

    trainer.add_callback("on_validation_end", lambda trainer, metrics: print(trainer.step, metrics["AP"]))

Each handler is called with the trainer and the event's payload, in the order they were added,
on the main process only (under ``torchrun`` the other processes announce nothing).

| event | payload | when |
| --- | --- | --- |
| ``on_train_start`` | ``TrainingStart`` | before the first step (also of a resumed run) |
| ``on_calibrated`` | ``CalibrationResult`` | after the start-of-training calibration |
| ``on_step_end`` | the step's losses (dict) | after each optimizer step |
| ``on_log`` | the record written to ``metrics.jsonl`` | every ``log_period`` steps |
| ``on_checkpoint`` | the path of ``last.pt`` | after each checkpoint |
| ``on_validation_end`` | the metrics (dict) | after each validation (``trainer.best``: the best so far) |
| ``on_train_end`` | ``TrainResult`` | when the loop ends, finished or stopped |
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SparseInstError
from ..progress import Progress

if TYPE_CHECKING:
    from ..data.datasets import DatasetSummary
    from .transfer import TransferReport

EVENTS = ("on_train_start", "on_calibrated", "on_step_end", "on_log", "on_checkpoint", "on_validation_end",
          "on_train_end")
Handler = Callable[[Any, Any], None]


@dataclass(frozen=True)
class TrainingStart:
    """What a run starts with, for a report: its data, its solver, precision and initialization."""

    out_dir: Path
    step: int  # 0, or the step a resumed run continues from
    max_iter: int
    datasets: dict[str, DatasetSummary]  # "train" and, with validation data, "val"
    solver: str  # the solver's resolution, in one line
    precision: str
    transfer: TransferReport | None  # what init_from loaded


class Callbacks:
    """Handlers by event."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {event: [] for event in EVENTS}

    def add(self, event: str, handler: Handler) -> None:
        if event not in self._handlers:
            hint = difflib.get_close_matches(event, EVENTS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise SparseInstError(f"unknown training event '{event}'{suggestion}; events: {', '.join(EVENTS)}")
        self._handlers[event].append(handler)

    def fire(self, event: str, trainer: Any, payload: Any) -> None:
        for handler in self._handlers[event]:
            handler(trainer, payload)


def report_progress(progress: Progress, callbacks: Callbacks) -> Callbacks:
    """Add to ``callbacks`` what reports a run to a ``Progress``: a task of ``max_iter`` steps
    advanced at each step with the loss, a note for the calibration and for each validation."""
    callbacks.add("on_train_start", lambda trainer, start: progress.start("train", start.max_iter,
                                                                          completed=start.step, unit="it"))
    callbacks.add("on_step_end", lambda trainer, losses: progress.advance(completed=trainer.step,
                                                                          status=f"loss {losses['loss']:.3f}"))
    callbacks.add("on_calibrated", lambda trainer, result: progress.note(
        f"calibrated {len(result.factors)} fresh layers: initial mask logits' RMS "
        f"{result.mask_logit_rms_before:.3g} -> {result.mask_logit_rms_after:.3g}"))
    callbacks.add("on_validation_end", lambda trainer, metrics: progress.note(
        f"step {trainer.step}: mask AP {metrics['AP']}  AP50 {metrics['AP50']}  AP75 {metrics['AP75']}"
        + ("  (new best: best.safetensors)" if trainer.best.step == trainer.step else "")))
    callbacks.add("on_train_end", lambda trainer, result: progress.stop())
    return callbacks
