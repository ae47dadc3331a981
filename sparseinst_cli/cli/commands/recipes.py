"""``sparseinst recipes``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ...recipe import load_recipe
from ...resources import builtin_recipe_names
from ..console import console
from ..options import Overrides


def recipes(
    context: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="Show this recipe (file or built-in name), resolved.")] = None,  # noqa: UP007
    overrides: Overrides = None,
) -> None:
    """List the built-in recipes, or validate one and print it with every default filled in."""
    if name is None:
        for recipe in builtin_recipe_names():
            console.print(recipe)
        return
    recipe = load_recipe(name, overrides or [])
    console.print_json(json.dumps(recipe.dump()))
