"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Overrides = Annotated[
    Optional[list[str]],  # noqa: UP007 - typer needs Optional here
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. model.iam.groups=8 (repeatable)."),
]
RecipeOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--recipe", "-r", help="Recipe file or built-in name (see 'sparseinst recipes')."),
]
WeightsOption = Annotated[
    Optional[Path],  # noqa: UP007
    typer.Option("--weights", "-w", help="Native checkpoint (.safetensors) written by train or convert."),
]
DeviceOption = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda or cuda:N.")]
