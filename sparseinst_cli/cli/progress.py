"""The command line's progress display: one bar (count, rate, elapsed, ETA, status) on a
terminal; where there is none (CI, ``nohup``, a cluster's log file) a plain line every
``PLAIN_PERIOD`` seconds, or as the environment variable ``SPARSEINST_LOG_EVERY`` says: "50"
(every 50 steps) or "10s" (every 10 seconds)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..progress import Progress as LibraryProgress
from .console import err_console

PLAIN_PERIOD = 30.0  # seconds between plain progress lines
LOG_EVERY_VARIABLE = "SPARSEINST_LOG_EVERY"
BYTES = "B"  # the unit of a download: shown as MB and MB/s
MEGABYTE = 1e6


@dataclass
class PlainCadence:
    """When plain lines are printed: every ``steps`` units, or every ``seconds``."""

    steps: int | None = None
    seconds: float = PLAIN_PERIOD

    @classmethod
    def from_environment(cls) -> PlainCadence:
        text = os.environ.get(LOG_EVERY_VARIABLE, "").strip().lower()
        try:
            if text.endswith("s") and float(text[:-1]) > 0:
                return cls(seconds=float(text[:-1]))
            if text and int(text) > 0:
                return cls(steps=int(text))
        except ValueError:
            pass
        return cls()


@dataclass
class _PlainTask:
    task: str
    total: int
    done: int
    start: int
    began: float
    printed: float
    printed_at_step: int


class ProgressBar(LibraryProgress):
    """``with ProgressBar() as progress: library_call(..., progress=progress)``."""

    def __init__(self, console: Console = err_console, cadence: PlainCadence | None = None) -> None:
        self.console = console
        self.cadence = cadence or PlainCadence.from_environment()
        self._bar: Progress | None = None
        self._task = None
        self._unit = "img"
        self._plain: _PlainTask | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, task: str, total: int, *, completed: int = 0, unit: str = "img") -> None:
        self.stop()
        self._unit = unit
        if not self.console.is_terminal:
            now = time.perf_counter()
            self._plain = _PlainTask(task, total, completed, completed, now, now, completed)
            return
        count = ((DownloadColumn(), TransferSpeedColumn()) if unit == BYTES
                 else (MofNCompleteColumn(), TextColumn("[cyan]{task.fields[rate]}")))
        self._bar = Progress(
            TextColumn(f"[bold]{escape(task)}"), BarColumn(bar_width=30), *count,
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=self.console, transient=True,
        )
        self._task = self._bar.add_task(task, total=total or None, completed=completed, rate="", status="")
        self._bar.start()

    def advance(self, amount: int = 1, *, completed: int | None = None, status: str = "") -> None:
        if self._bar is not None:
            if completed is None:
                self._bar.update(self._task, advance=amount, status=escape(status))
            else:
                self._bar.update(self._task, completed=completed, status=escape(status))
            if self._unit != BYTES:  # a download's columns show its speed themselves
                speed = self._bar.tasks[0].speed
                self._bar.update(self._task, rate=f"{speed:.2f} {self._unit}/s" if speed else "")
        elif self._plain is not None:
            plain = self._plain
            plain.done = completed if completed is not None else plain.done + amount
            now = time.perf_counter()
            due = (plain.done - plain.printed_at_step >= self.cadence.steps if self.cadence.steps
                   else now - plain.printed >= self.cadence.seconds)
            if due or (plain.total and plain.done >= plain.total):
                plain.printed, plain.printed_at_step = now, plain.done
                self.console.print(self._plain_line(now, status), highlight=False)

    def _plain_line(self, now: float, status: str) -> str:
        plain = self._plain
        elapsed = now - plain.began
        rate = (plain.done - plain.start) / elapsed if elapsed > 0 else 0.0
        if self._unit == BYTES:
            size = f"{plain.done / MEGABYTE:.1f}" + (f"/{plain.total / MEGABYTE:.1f}" if plain.total else "")
            left = f" eta {(plain.total - plain.done) / rate:.0f}s" if plain.total and rate > 0 else ""
            return f"{plain.task}: {size} MB {rate / MEGABYTE:.2f} MB/s elapsed {elapsed:.0f}s{left} {status}".rstrip()
        if not plain.total:  # a camera or stream: no end to count down to
            return f"{plain.task}: {plain.done} {rate:.2f} {self._unit}/s elapsed {elapsed:.0f}s {status}".rstrip()
        left = (plain.total - plain.done) / rate if rate > 0 else 0.0
        return (f"{plain.task}: {plain.done}/{plain.total} {rate:.2f} {self._unit}/s "
                f"elapsed {elapsed:.0f}s eta {left:.0f}s {status}").rstrip()

    def note(self, message: str) -> None:
        (self._bar.console if self._bar is not None else self.console).print(escape(message), highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._plain = None, None
