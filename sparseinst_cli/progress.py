"""The progress bar of commands that work through images: count, rate and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ImageProgress:
    """``with ImageProgress("eval", total=n, console=c) as progress: progress.advance(k)``."""

    def __init__(self, description: str, total: int, console: Console) -> None:
        self._progress = Progress(
            TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self._task = self._progress.add_task(description, total=total, rate="")

    def __enter__(self) -> ImageProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @property
    def console(self) -> Console:
        return self._progress.console

    def advance(self, images: int = 1) -> None:
        self._progress.update(self._task, advance=images)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:.2f} img/s" if speed else "")
