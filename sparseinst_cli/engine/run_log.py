"""What a training run records: metrics as JSON lines, optionally TensorBoard too, and the
best validation so far.

Only the main process records; other processes get a ``RunLog`` that does nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import RecipeError

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"


class RunLog:
    def __init__(self, out_dir: Path | None, *, tensorboard: bool = False) -> None:
        self.out_dir = out_dir
        self.enabled = out_dir is not None
        self._writer = _tensorboard_writer(out_dir) if self.enabled and tensorboard else None
        self._started = time.perf_counter()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (and the numbers to TensorBoard)."""
        if not self.enabled:
            return
        record = {"time": round(time.perf_counter() - self._started, 3), **record}
        with (self.out_dir / METRICS_FILE).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in _flatten(record):
                self._writer.add_scalar(key, value, record["step"])


class LogWindow:
    """The values logged since the last record (loss terms, grad_norm) and the images trained:
    each record holds their means and the throughput. Kept in ``last.pt``, so that a resumed run
    logs what an uninterrupted one would have."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.restart_clock()

    def restart_clock(self) -> None:
        """Count images and time from now (a run's first window starts with its first step)."""
        self.images = 0
        self.started = time.perf_counter()

    def add(self, values: Mapping[str, float], images: int) -> None:
        for name, value in values.items():
            if math.isfinite(value):  # an fp16 step skipped for overflow has an infinite grad_norm
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1
        self.images += images

    def record(self, step: int, lr: float) -> dict[str, Any]:
        """The record of the window (then emptied): step, learning rate, means, images per second."""
        elapsed = time.perf_counter() - self.started
        record = {"step": step, "lr": lr, **{name: total / self.counts[name] for name, total in self.sums.items()},
                  "images_per_s": round(self.images / elapsed, 3)}
        self.sums, self.counts = {}, {}
        self.restart_clock()
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = dict(state["sums"])
        # Checkpoints written before per-value counts kept one count for all.
        self.counts = dict(state.get("counts") or {name: int(state["steps"]) for name in state["sums"]})


@dataclass
class BestSoFar:
    """The validation with the highest mask AP so far (``best.safetensors`` holds its weights) and
    the validations since it without a higher one. Kept in ``last.pt``, so that a resumed run
    goes on choosing and counting where it stopped."""

    step: int | None = None  # of the best validation; None until a validation gives an AP
    ap: float | None = None
    ap50: float | None = None
    since: int = 0  # validations in a row, after the best, without a higher AP
    validated: int | None = None  # the step of the last validation

    def update(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Count the validation at ``step``; True when its AP is higher than every one before.
        A validation without an AP (COCO leaves it undefined with no ground truth) is not
        counted either way."""
        self.validated = step
        ap = _number(metrics.get("AP"))
        if ap is None:
            return False
        # A resume that adopted a best.safetensors written after its checkpoint replays that
        # validation: the same step and AP are the best again, not a validation without one.
        if self.ap is None or ap > self.ap or (step == self.step and ap == self.ap):
            self.step, self.ap, self.ap50, self.since = step, ap, _number(metrics.get("AP50")), 0
            return True
        self.since += 1
        return False

    def exhausted(self, patience: int) -> bool:
        """Whether ``patience`` (> 0) validations in a row went by without a higher AP."""
        return patience > 0 and self.since >= patience

    def to_json(self, path: str) -> dict[str, Any] | None:
        """The record of ``run.json``: step, AP, AP50 and ``path``; None before any AP."""
        if self.step is None:
            return None
        return {"step": self.step, "AP": self.ap, "AP50": self.ap50, "path": path}

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in BestSoFar().state_dict().items():
            setattr(self, key, state.get(key, value))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    scalars = []
    for key, value in record.items():
        if key in ("step", "time"):
            continue
        if isinstance(value, dict):
            scalars.extend(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars.append((f"{prefix}{key}", float(value)))
    return scalars


def _tensorboard_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # the tensorboard package is optional
        raise RecipeError("train", [f"tensorboard: needs the 'tensorboard' package ({exc}); pip install tensorboard"]) from None
    return SummaryWriter(str(out_dir / "tensorboard"))
