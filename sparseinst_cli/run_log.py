"""What a training run reports: a rich progress bar, metrics as JSON lines, optional TensorBoard.

Only the main process logs; other processes get a ``RunLog`` that does nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

METRICS_FILE = "metrics.jsonl"


class RunLog:
    def __init__(self, out_dir: Path | None, console: Console, *, total: int, start: int, tensorboard: bool = False):
        self.out_dir, self.console = out_dir, console
        self.enabled = out_dir is not None
        self._writer = _tensorboard_writer(out_dir) if self.enabled and tensorboard else None
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=console, disable=not self.enabled,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, rate="", losses="")
        self._started = time.perf_counter()

    def __enter__(self) -> RunLog:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
        if self._writer is not None:
            self._writer.close()

    def advance(self, step: int, summary: str) -> None:
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, completed=step, losses=summary, rate=f"{speed:.2f} it/s" if speed else "")

    def print(self, *objects: Any) -> None:
        if self.enabled:
            self._progress.console.print(*objects)

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
        raise RuntimeError(f"train.tensorboard needs the 'tensorboard' package ({exc}); pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))
