"""Turning the library's user-facing errors into one-line messages and exit codes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from components.pretrained import WeightsError
from components.registry import ComponentError

from .datasets import DatasetError
from .evaluation import ResultsError
from .export import ExportError
from .images import ImageError
from .recipe import RecipeError

PIPED_WIDTH = 160  # tables written to a file or pipe keep their columns instead of folding at 80

console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = PIPED_WIDTH
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line

EXIT_FAILED = 1  # the command ran but some of its work failed
EXIT_USAGE = 2  # bad input: recipe, weights, files, arguments
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report known input errors without a traceback and exit non-zero."""
    try:
        yield
    except RecipeError as exc:
        err_console.print(f"[bold red]error:[/] recipe {escape(exc.source)} is invalid:")
        for line in exc.lines:
            err_console.print(f"  {escape(line)}")
        raise typer.Exit(EXIT_USAGE) from None
    except (WeightsError, ImageError, ComponentError, DatasetError, ResultsError, ExportError,
            FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
