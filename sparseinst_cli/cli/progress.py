"""The command line's progress display: one bar (count, rate, elapsed, ETA, status) on a
terminal; a plain line every ``PLAIN_PERIOD`` seconds where there is none (CI, log files)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..progress import Progress as LibraryProgress
from .console import err_console

PLAIN_PERIOD = 30.0  # seconds between plain progress lines


class ProgressBar(LibraryProgress):
    """``with ProgressBar() as progress: library_call(..., progress=progress)``."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._unit = "img"
        self._plain: dict = {}

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, task: str, total: int, *, completed: int = 0, unit: str = "img") -> None:
        self.stop()
        self._unit = unit
        if not self.console.is_terminal:
            self._plain = {"task": task, "total": total, "done": completed, "start": completed,
                           "began": time.perf_counter(), "printed": time.perf_counter()}
            return
        self._bar = Progress(
            TextColumn(f"[bold]{escape(task)}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=self.console, transient=True,
        )
        self._task = self._bar.add_task(task, total=total, completed=completed, rate="", status="")
        self._bar.start()

    def advance(self, amount: int = 1, *, completed: int | None = None, status: str = "") -> None:
        if self._bar is not None:
            if completed is None:
                self._bar.update(self._task, advance=amount, status=escape(status))
            else:
                self._bar.update(self._task, completed=completed, status=escape(status))
            speed = self._bar.tasks[0].speed
            self._bar.update(self._task, rate=f"{speed:.2f} {self._unit}/s" if speed else "")
        elif self._plain:
            plain = self._plain
            plain["done"] = completed if completed is not None else plain["done"] + amount
            now = time.perf_counter()
            if now - plain["printed"] >= PLAIN_PERIOD or plain["done"] >= plain["total"]:
                plain["printed"] = now
                self.console.print(self._plain_line(now, status), highlight=False)

    def _plain_line(self, now: float, status: str) -> str:
        plain = self._plain
        elapsed = now - plain["began"]
        rate = (plain["done"] - plain["start"]) / elapsed if elapsed > 0 else 0.0
        left = (plain["total"] - plain["done"]) / rate if rate > 0 else 0.0
        return (f"{plain['task']}: {plain['done']}/{plain['total']} {rate:.2f} {self._unit}/s "
                f"elapsed {elapsed:.0f}s eta {left:.0f}s {status}").rstrip()

    def note(self, message: str) -> None:
        (self._bar.console if self._bar is not None else self.console).print(escape(message), highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._plain = None, {}
