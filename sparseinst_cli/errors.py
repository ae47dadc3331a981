"""Every error the toolkit reports to its users, under one base, ``SparseInstError``.

A front end catches ``SparseInstError`` and shows its one-line message; nothing else it needs
to know. Messages describe the problem in the library's terms (``score_threshold``); the
command line adds the flag that changes the named ``setting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.errors import ComponentError, SparseInstError, WeightsError

__all__ = [
    "ComponentError",
    "DatasetError",
    "ExportError",
    "ImageError",
    "NothingToShow",
    "Notice",
    "RecipeError",
    "ResultsError",
    "RunFilesError",
    "SparseInstError",
    "TrainingError",
    "WeightsError",
]


class RecipeError(SparseInstError, ValueError):
    """A recipe that cannot be read or does not validate; ``lines`` has one problem each."""

    def __init__(self, source: str, lines: Sequence[str], *, setting: str | None = None) -> None:
        self.source, self.lines = source, list(lines)
        super().__init__(f"recipe {source}: " + "; ".join(self.lines), setting=setting)


class DatasetError(SparseInstError, ValueError):
    """A dataset problem that stops the work; the message names the file."""


class ImageError(SparseInstError, ValueError):
    """An image that is missing or cannot be decoded."""


class ResultsError(SparseInstError, ValueError):
    """A results file that cannot be scored against its ground truth."""


class ExportError(SparseInstError, RuntimeError):
    """The ONNX export or the ONNX runtime failed; the message says how."""


class TrainingError(SparseInstError, RuntimeError):
    """The run cannot go on (a non-finite loss, an unusable resume state)."""


class RunFilesError(SparseInstError, ValueError):
    """A run directory without the files asked of it (metrics, recipe)."""


class NothingToShow(SparseInstError, ValueError):
    """The model found nothing that passes the asked-for threshold."""


@dataclass(frozen=True)
class Notice:
    """A warning about a result that still stands (a capped recall, a skipped image)."""

    message: str
    setting: str | None = None  # the parameter that addresses it, as in ``SparseInstError``

    def __str__(self) -> str:
        return self.message
