"""The ``sparseinst`` command line."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

import components  # noqa: F401  (fills the component registries)

from .commands.components import components as components_command
from .commands.convert import convert
from .commands.curves import curves
from .commands.demo_data import demo_data
from .commands.eval import eval_command
from .commands.export import export_app
from .commands.predict import predict
from .commands.recipes import recipes
from .commands.tide import tide
from .commands.time import time_command
from .commands.train import train
from .commands.viz_iam import viz_iam

app = typer.Typer(
    name="sparseinst",
    help="SparseInst real-time instance segmentation: train, evaluate, analyse errors (TIDE), visualize IAMs, predict, convert weights, inspect recipes and components.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(train)
app.command("demo-data")(demo_data)
app.command()(predict)
app.command("eval")(eval_command)
app.command()(tide)
app.command()(curves)
app.command("time")(time_command)
app.add_typer(export_app, name="export")
app.command("viz-iam")(viz_iam)
app.command()(convert)
app.command("components")(components_command)
app.command()(recipes)


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


def main() -> None:
    app()
