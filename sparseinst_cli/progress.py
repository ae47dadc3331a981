"""How long work reports itself: the library calls a ``Progress``, a front end draws it.

The base class reports nothing (``SILENT``); the command line's subclass draws a bar with rate
and ETA on a terminal and plain lines elsewhere.
"""

from __future__ import annotations


class Progress:
    """``start`` a task of ``total`` units, ``advance`` it, ``note`` lines worth showing."""

    def start(self, task: str, total: int, *, completed: int = 0, unit: str = "img") -> None:
        """Begin ``task``; ``unit`` names what ``total`` counts (images, iterations)."""

    def advance(self, amount: int = 1, *, completed: int | None = None, status: str = "") -> None:
        """``amount`` more units done (or ``completed`` in all); ``status`` is a short summary."""

    def note(self, message: str) -> None:
        """A line to show now (a skipped input, a stage that begins, a result along the way)."""

    def stop(self) -> None:
        """The task is over."""


SILENT = Progress()
