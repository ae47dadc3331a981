"""``sparseinst components``."""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer
from rich.table import Table

from components.registry import FAMILIES, iter_components, registry

from ..console import console, fail


def components(
    family: Annotated[Optional[str], typer.Argument(help=f"Only this family: {', '.join(FAMILIES)}.")] = None,  # noqa: UP007
) -> None:
    """List every registered component (plugins included) with its parameters and defaults."""
    if family is not None and family not in FAMILIES:
        raise fail(f"unknown family '{family}'; known: {', '.join(FAMILIES)}")
    table = Table(title="Components")
    for column in ("family", "name", "parameters (default)", "summary"):
        table.add_column(column)
    for fam, name, params in iter_components():
        if family is not None and fam != family:
            continue
        described = "\n".join(
            f"{p.name}: {p.type}" + ("" if p.default is inspect.Parameter.empty else f" = {p.default!r}")
            for p in params
        )
        doc = (inspect.getdoc(registry(fam).get(name)) or "").split("\n")[0]
        table.add_row(fam, name, described or "-", doc)
    console.print(table)
