"""What a training run records: metrics as JSON lines, optionally TensorBoard too.

Only the main process records; other processes get a ``RunLog`` that does nothing.
"""

from __future__ import annotations

import json
import time
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
