"""The base of every error the toolkit reports to its users, and the two the components raise.

Each error's message is one line naming the file, field or component at fault. ``setting``
names the parameter a user can change to get past it (``score_threshold``, or with the value
to give it, ``backend=onnxruntime``), so that a front end can say how (the command line adds
its flag).
"""

from __future__ import annotations


class SparseInstError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ComponentError(SparseInstError, ValueError):
    """A component cannot be registered or looked up."""


class WeightsError(SparseInstError, ValueError):
    """Weights that cannot be read, or that do not fit the model."""
