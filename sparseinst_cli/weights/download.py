"""Downloading one file: resumable, size- and checksum-checked, and never used half-written.

Plain ``urllib`` and ``platformdirs`` rather than gdown or huggingface_hub: gdown pulls in
requests, beautifulsoup4 and tqdm, draws its own tqdm bar and cannot be told the expected size;
the authors do not publish on the Hugging Face hub; and Google Drive needs only its usercontent
URL with ``confirm=t``, which urllib fetches like any other.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import WeightsError
from ..progress import SILENT, Progress

CHUNK_SIZE = 1 << 20  # bytes read and written at a time
TIMEOUT = 30.0  # seconds a connection or a single read may stall before the download fails
FailureKind = Literal["missing", "network", "web_page", "incomplete", "wrong_file"]


def _user_agent() -> str:
    try:
        return f"sparseinst/{version('sparseinst')} (Python-urllib)"
    except PackageNotFoundError:
        return "sparseinst (Python-urllib)"


class DownloadError(WeightsError):
    """A download that did not finish: ``url`` and ``reason``, and what ``kind`` of failure
    (``missing``: the server has no such file; ``incomplete``: a ``.part`` was kept to resume),
    and the HTTP ``status`` of a refusal."""

    def __init__(self, url: str, reason: str, kind: FailureKind = "network", *, status: int | None = None) -> None:
        self.url, self.reason, self.kind, self.status = url, reason, kind, status
        super().__init__(f"{url}: {reason}")


def part_path(dest: Path) -> Path:
    """Where ``dest`` is written while it is incomplete."""
    return dest.with_suffix(dest.suffix + ".part")


@contextmanager
def locked(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``dest``'s ``.lock`` file, so that two processes never write
    the same ``.part`` (no lock where ``fcntl`` is missing, as on Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_suffix(".lock"), "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: Progress = SILENT,
    task: str | None = None,
    timeout: float | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Path:
    """Fetch ``url`` into ``dest`` and return ``dest``.

    The bytes go to ``dest.part`` first, resumed with a ``Range`` request when one is there; only
    a complete file (the size the server announced, and ``expected_size`` and ``sha256`` where
    given) is renamed to ``dest``. An incomplete ``.part`` is kept for the next call; one with the
    wrong size or checksum is deleted. ``timeout`` (default ``TIMEOUT``) bounds the wait for the
    connection and for each read, so that a stalled server fails the download. An existing
    ``dest`` is taken as done: another process may have finished it while this one waited for the
    lock. Raises ``DownloadError``.
    """
    dest = Path(dest)
    timeout = TIMEOUT if timeout is None else timeout
    with locked(dest):
        if dest.is_file():
            return dest
        part = part_path(dest)
        start = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, start, timeout)
        except DownloadError as exc:
            if exc.status != 416 or not start:
                raise
            part.unlink()  # the server has no bytes past the part: it is complete, or bad; start over
            start, response = 0, _open(url, 0, timeout)
        with response:
            total = _receive(url, response, part, start, progress, task or dest.name, chunk_size)
        _finish(url, part, dest, total, expected_size, sha256)
    return dest


def copy_file(
    source: Path,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: Progress = SILENT,
    task: str | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Path:
    """Copy ``source`` (a local mirror's file) into ``dest`` with the checks of ``download``;
    ``source`` itself is only read."""
    dest = Path(dest)
    with locked(dest):
        if dest.is_file():
            return dest
        part = part_path(dest)
        total = source.stat().st_size
        progress.start(task or dest.name, total, unit="B")
        try:
            with source.open("rb") as reader, part.open("wb") as writer:
                while chunk := reader.read(chunk_size):
                    writer.write(chunk)
                    progress.advance(len(chunk))
        finally:
            progress.stop()
        _finish(str(source), part, dest, total, expected_size, sha256)
    return dest


def _open(url: str, start: int, timeout: float):  # noqa: ANN202 - urllib's response type is private
    headers = {"User-Agent": _user_agent()}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        kind = "missing" if exc.code == 404 else "network"
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}", kind, status=exc.code) from None
    except urllib.error.URLError as exc:
        raise DownloadError(url, _reason(exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, a malformed URL
        raise DownloadError(url, _reason(exc)) from None


def _receive(url: str, response: BinaryIO, part: Path, start: int, progress: Progress, task: str,
             chunk_size: int) -> int | None:
    """Write the response's body into ``part`` (appended after ``start`` bytes on a 206 answer
    for that offset, from zero otherwise); return the whole file's size if the server said it."""
    if response.headers.get_content_type() == "text/html":
        raise DownloadError(url, "the server answered with a web page (text/html), not the file", "web_page")
    if response.status == 206:
        content_range = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not content_range or int(content_range[1]) != start:
            part.unlink(missing_ok=True)
            raise DownloadError(url, f"asked for the bytes from {start:,} on, the server sent another range; the part "
                                     "is deleted and the next try starts over")
        total = int(content_range[2]) if content_range[2] != "*" else None
        mode = "ab"
    else:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        start, mode = 0, "wb"
    done = start
    progress.start(task, total or 0, completed=start, unit="B")
    try:
        with part.open(mode) as writer:  # a failure to write (a full disk) is an OSError of its own
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, ValueError, http.client.HTTPException) as exc:  # a reset, a stalled read
                    raise DownloadError(url, f"the connection broke after {done:,} of {_size(total)} bytes "
                                             f"({_reason(exc)}); the part is kept and the next try resumes it",
                                        "incomplete") from None
                if not chunk:
                    break
                writer.write(chunk)
                done += len(chunk)
                progress.advance(len(chunk))
    finally:
        progress.stop()
    return total


def _finish(url: str, part: Path, dest: Path, total: int | None, expected_size: int | None,
            sha256: str | None) -> None:
    """Rename ``part`` to ``dest`` if it is complete and checks out; otherwise raise, keeping a
    part that a later try can complete and deleting one that is wrong."""
    size = part.stat().st_size
    for wanted in (total, expected_size):
        if wanted is not None and size < wanted:
            raise DownloadError(url, f"incomplete: {size:,} of {wanted:,} bytes arrived; the part is kept and the "
                                     "next try resumes it", "incomplete")
        if wanted is not None and size > wanted:
            part.unlink()
            raise DownloadError(url, f"{size:,} bytes arrived where {wanted:,} were expected; deleted", "wrong_file")
    if sha256 is not None:
        digest = file_sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise DownloadError(url, f"its SHA-256 is {digest}, not the published {sha256.lower()}; deleted",
                                "wrong_file")
    os.replace(part, dest)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(total: int | None) -> str:
    return f"{total:,}" if total is not None else "an unknown number of"


def _reason(exc: object) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "timed out" if isinstance(exc, TimeoutError) or text == "timed out" else text

