"""Files: written so that a crash or a full disk never leaves half of one behind, and JSON read
with one clear error for each way it can be bad."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import SparseInstError


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str, error: type[SparseInstError] = SparseInstError) -> Any:
    """The JSON in ``path``, or ``error`` naming the file and what it should have been (``what``,
    e.g. "annotations file") when it is missing, unreadable or not JSON."""
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({exc})") from None
