"""Files: written so that a crash or a full disk never leaves half of one behind, and JSON read
with one clear error for each way it can be bad."""

from __future__ import annotations

import errno
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import SparseInstError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread exists
    os.umask(mask)
    return mask


UMASK = _read_umask()
DISK_FULL = os.strerror(errno.ENOSPC)  # "No space left on device", in the messages of writers that hide the errno
FULL_DISK_MARGIN = 64 << 20  # bytes free under which a writer's failure is taken for a full disk


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 would hide the result from the user's group
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and not isinstance(exc, OSError) and disk_full(exc, Path(tmp))
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def disk_full(exc: Exception, partial: Path) -> bool:
    """Whether a writer's own error (safetensors', or torch's "unexpected pos") came from a full
    disk: its message says so, or the file system holding the partial file has (next to) no room
    left while that file is still there."""
    if DISK_FULL in str(exc):
        return True
    try:
        stats = os.statvfs(partial.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DISK_MARGIN


def not_found(path: Path, what: str = "file") -> str:
    """Why ``path`` cannot be read as a ``what``, for a message: missing, or a folder where a
    file belongs (or a file where a folder belongs, for ``what`` ending in "folder")."""
    path = Path(path)
    if what.endswith("folder") and path.exists() and not path.is_dir():
        return f"{path}: is a file, not a {what}"
    if not what.endswith("folder") and path.is_dir():
        return f"{path}: is a folder, not a {what}"
    return f"{path}: no such {what}"


def read_json(path: Path, what: str, error: type[SparseInstError] = SparseInstError) -> Any:
    """The JSON in ``path``, or ``error`` naming the file and what it should have been (``what``,
    e.g. "annotations file") when it is missing, unreadable or not JSON."""
    if not path.is_file():
        raise error(not_found(path, what))
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({exc})") from None


def output_folder(path: Path, setting: str = "out") -> Path:
    """``path`` as a folder to write into, created if missing; refused, naming it, when it or a
    folder above it is a file, or when it cannot be created or written to."""
    path = Path(path)
    for node in (path, *path.parents):
        if node.exists() and not node.is_dir():
            where = "is a file" if node == path else f"{node} is a file"
            raise SparseInstError(f"{path}: {where}, not a folder", setting=setting)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparseInstError(f"{path}: cannot create the folder ({exc.strerror})", setting=setting) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SparseInstError(f"{path}: cannot write into this folder (permission denied)", setting=setting)
    return path


def output_file(path: Path, suffixes: Sequence[str], setting: str = "out", *, inputs: Iterable[Path] = ()) -> Path:
    """``path`` as a file to write: one of ``suffixes``, not a folder, not one of the ``inputs``
    (nothing the user gave is overwritten), in a folder that can be written to."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise SparseInstError(f"{path}: expected a {' or '.join(suffixes)} file", setting=setting)
    if path.is_dir():
        raise SparseInstError(f"{path}: is a folder; give a file name", setting=setting)
    refuse_overwriting([path], inputs, setting)
    output_folder(path.parent, setting)
    return path


def refuse_overwriting(outputs: Iterable[Path], inputs: Iterable[Path], setting: str = "out") -> None:
    """Refuse, naming it, an output that would replace one of the ``inputs`` (the same file, by
    any path or link to it): called before anything is written, so that nothing the user gave
    is ever lost, whatever ``--overwrite`` or ``--exist-ok`` say."""
    existing = [Path(i) for i in inputs if Path(i).exists()]
    for output in outputs:
        output = Path(output)
        if output.exists() and any(output.samefile(i) for i in existing):
            raise SparseInstError(f"{output}: is an input of this command and would be overwritten; write the "
                                  f"output elsewhere", setting=setting)


def refuse_existing(outputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse, naming them, outputs that already exist unless ``overwrite`` (``--overwrite``):
    called before anything is written, so that a second run never silently replaces the first
    one's files."""
    existing = [str(output) for output in outputs if Path(output).exists()]
    if existing and not overwrite:
        verb = "already exists" if len(existing) == 1 else "already exist"
        raise SparseInstError(f"{', '.join(existing)} {verb}; nothing written (--overwrite replaces "
                              f"{'it' if len(existing) == 1 else 'them'})", setting="overwrite")


def new_run_folder(base: Path, exist_ok: bool = False) -> Path:
    """A folder for one run's outputs, created: ``base`` when it does not exist yet (or with
    ``exist_ok``), else the first of ``base2``, ``base3``, ... that does not, so that a second run
    never replaces the first one's files. Claimed with ``mkdir``, so two runs starting at once
    get different folders."""
    base = Path(base)
    if exist_ok:
        return output_folder(base)
    output_folder(base.parent)
    for number in itertools.count(1):
        candidate = base if number == 1 else base.with_name(f"{base.name}{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise SparseInstError(f"{candidate}: cannot create the folder ({exc.strerror})", setting="out") from None
        return candidate
    raise AssertionError("unreachable")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files ``atomic_write`` leaves when a process is killed mid-write."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json(path: Path, data: Any, *, indent: int | None = 2) -> Path:
    """``data`` as JSON at ``path``, atomically (``indent=None``: compact, one line)."""
    text = json.dumps(data, indent=indent, separators=None if indent else (",", ":")) + ("\n" if indent else "")
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    return Path(path)
