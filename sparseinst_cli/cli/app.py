"""The ``sparseinst`` command line.

Every command module imports only light modules at its top and loads the library modules that
do its work (torch, OpenCV, onnx) inside its function: ``--help``, ``--version`` and usage
errors answer before any of them loads.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Annotated

import typer

from ..memory import keep_freed_memory
from .commands.components import components as components_command
from .commands.convert import convert
from .commands.curves import curves
from .commands.data import ceiling as data_ceiling
from .commands.data import check as data_check
from .commands.data import convert as data_convert
from .commands.data import split as data_split
from .commands.demo_data import demo_data
from .commands.eval import eval_command
from .commands.export import int8, onnx, openvino
from .commands.models import models
from .commands.predict import predict
from .commands.recipes import recipes
from .commands.tide import tide
from .commands.time import time_command
from .commands.train import train
from .commands.viz_iam import viz_iam
from .console import show_warning, user_errors
from .options import release_empty_run_folders

app = typer.Typer(
    name="sparseinst",
    help="SparseInst real-time instance segmentation: predict with the authors' COCO models or your own, train, "
         "evaluate, analyse errors (TIDE), visualize IAMs, time, export, convert weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def guarded(command: Callable) -> Callable:
    """The one place where a command's failures become one line and a documented exit code."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            with user_errors(kwargs.get("context")):
                result = command(*args, **kwargs)
        except typer.Exit as stop:
            release_empty_run_folders(failed=stop.exit_code != 0)
            raise
        except BaseException:
            release_empty_run_folders(failed=True)
            raise
        release_empty_run_folders(failed=False)
        return result

    return run


for name, command in (("predict", predict), ("models", models), ("train", train), ("demo-data", demo_data),
                      ("eval", eval_command), ("tide", tide), ("curves", curves), ("time", time_command),
                      ("viz-iam", viz_iam), ("convert", convert), ("components", components_command),
                      ("recipes", recipes)):
    app.command(name)(guarded(command))
export_app = typer.Typer(help="Export a checkpoint for deployment.", no_args_is_help=True)
export_app.command("onnx")(guarded(onnx))
export_app.command("int8")(guarded(int8))
export_app.command("openvino")(guarded(openvino))
app.add_typer(export_app, name="export")
data_app = typer.Typer(help="Check, convert and split datasets; the AP ceiling of an input size.", no_args_is_help=True)
data_app.command("check")(guarded(data_check))
data_app.command("convert")(guarded(data_convert))
data_app.command("split")(guarded(data_split))
data_app.command("ceiling")(guarded(data_ceiling))
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sparseinst {version('sparseinst')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """SparseInst real-time instance segmentation."""
    warnings.showwarning = show_warning
    keep_freed_memory()  # every command allocates the same large tensors pass after pass

