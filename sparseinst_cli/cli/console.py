"""Where the command line writes, its exit codes, and how library errors become one-line messages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import NothingToShow, Notice, RecipeError, SparseInstError, TrainingError

PIPED_WIDTH = 160  # tables written to a file or pipe keep their columns instead of folding at 80

console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = PIPED_WIDTH
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line

EXIT_FAILED = 1  # the command ran but some of its work failed
EXIT_USAGE = 2  # bad input: recipe, weights, files, arguments
EXIT_INTERRUPTED = 130
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


@contextmanager
def user_errors(context: typer.Context | None = None, code: int = EXIT_USAGE) -> Iterator[None]:
    """Report the library's errors (and a missing file) in one line, naming the flag of the
    ``context``'s command that addresses it, and exit with ``code`` (``EXIT_FAILED`` when the
    work found nothing or could not go on); Ctrl-C exits with ``EXIT_INTERRUPTED``."""
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
    except FileNotFoundError as exc:
        raise fail(str(exc), code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
