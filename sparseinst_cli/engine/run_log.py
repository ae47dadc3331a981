"""What a training run records: metrics as JSON lines, optionally TensorBoard too.

Only the main process records; other processes get a ``RunLog`` that does nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RecipeError

METRICS_FILE = "metrics.jsonl"


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
