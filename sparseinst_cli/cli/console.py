"""Where the command line writes, its exit codes, and how library errors become one-line messages."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NothingToShow, Notice, RecipeError, SparseInstError, TrainingError
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

PIPED_WIDTH = 160  # tables written to a file or pipe keep their columns instead of folding at 80

console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = PIPED_WIDTH
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line

FAILED_WORK = (NothingToShow, TrainingError)  # the input was fine; the work found nothing or could not go on


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def option_for(setting: str | None, context: typer.Context | None) -> str | None:
    """The command's flag for a library setting: ``score_threshold`` -> ``--score-threshold``,
    ``backend=onnxruntime`` -> ``--backend onnxruntime``."""
    if setting is None or context is None:
        return None
    name, _, value = setting.partition("=")
    for param in context.command.params:
        if param.name == name and param.opts[0].startswith("-"):
            return " ".join((max(param.opts, key=len), value)).strip()
    return None


def explained(message: str, setting: str | None, context: typer.Context | None) -> str:
    """``message`` with the flag that changes ``setting`` added, when the command has one."""
    flag = option_for(setting, context)
    return f"{message} ({flag})" if flag else message


def warn(notice: Notice | str, context: typer.Context | None = None) -> None:
    text = explained(notice.message, notice.setting, context) if isinstance(notice, Notice) else notice
    err_console.print(f"[yellow]warning:[/] {escape(text)}")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` for the command line: a library's warning (a deprecated name, a
    plugin skipped) as one ``warning:`` line, without the file and line it came from."""
    warn(str(message))


def note(message: str) -> None:
    """A line about what the command chose for the user (a default model, a new folder)."""
    err_console.print(f"[cyan]note:[/] {escape(message)}")


def renamed(current: object, current_flag: str, **former: object) -> object:
    """The value of an option that has former names (given as ``--former-name=value``
    keywords, ``None`` when not used): a former name warns; two values at once are refused."""
    given = {flag: value for flag, value in former.items() if value is not None}
    for flag in given:
        warn(f"--{flag.replace('_', '-')} is deprecated and will be removed; use {current_flag}")
    values = ([current] if current is not None else []) + list(given.values())
    if len(values) > 1:
        raise fail(f"give {current_flag} once (its former names are the same option)")
    return values[0] if values else None


@contextmanager
def user_errors(context: typer.Context | None = None, code: int = EXIT_USAGE) -> Iterator[None]:
    """Report what stops a command in one line, naming the file or the flag of the ``context``'s
    command that addresses it, and exit with the documented code: ``code`` (bad input) for the
    library's errors and for paths that do not fit (missing, a file where a folder belongs, no
    permission); ``EXIT_FAILED`` when the work ran but could not finish (nothing found, a run
    that cannot go on, a full disk or another I/O failure); ``EXIT_INTERRUPTED`` for Ctrl-C."""
    try:
        yield
    except RecipeError as exc:
        headline = explained(f"recipe {exc.source} is invalid", exc.setting, context)
        err_console.print(f"[bold red]error:[/] {escape(headline)}:")
        for line in exc.lines:
            err_console.print(f"  {escape(line)}")
        raise typer.Exit(EXIT_USAGE) from None
    except FAILED_WORK as exc:
        raise fail(explained(str(exc), exc.setting, context), EXIT_FAILED) from None
    except SparseInstError as exc:
        raise fail(explained(str(exc), exc.setting, context), code) from None
    except OSError as exc:
        message, bad_path = os_error_message(exc)
        raise fail(message, code if bad_path else EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None


def os_error_message(exc: OSError) -> tuple[str, bool]:
    """One line for an operating-system error, and whether it is a path that does not fit (bad
    input) rather than a failure of the machine (a full disk, an I/O error)."""
    where = exc.filename if exc.filename is not None else "a file"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {where}; nothing was left half-written", False
    reasons = {
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
        errno.EISDIR: "is a folder, not a file",
        errno.EEXIST: "already exists",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENAMETOOLONG: "file name too long",
    }
    if exc.errno in reasons:
        return f"{where}: {reasons[exc.errno]}", True
    return f"{where}: {exc.strerror or exc}", False
