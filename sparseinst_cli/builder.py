"""Build a SparseInst model (and its training loss) from a validated recipe."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from components import SparseInst, build
from components.registry import ComponentError, ComponentParams, wired_arguments

from .errors import RecipeError
from .recipe import Recipe


def build_model(recipe: Recipe) -> SparseInst:
    """Backbone -> encoder -> decoder (with its IAM), wired by channel counts.

    A backbone must expose ``out_channels`` (C3, C4, C5) and an encoder ``out_channels`` (D).
    Which of the values below a component takes is ``components.registry.WIRED_ARGUMENTS``.
    """
    spec = recipe.model
    try:
        known = {**_recipe_values(recipe), "iam": partial(build, "iam", spec.iam.name, **spec.iam.arguments())}
        backbone = _build("backbone", spec.backbone, known)
        encoder = _build("encoder", spec.encoder, {**known, "in_channels": backbone.out_channels})
        decoder = _build("decoder", spec.decoder, {**known, "in_channels": encoder.out_channels})
    except (ComponentError, ValueError, TypeError) as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError("model", [f"cannot build the model: {exc}"]) from exc
    return SparseInst(backbone, encoder, decoder)


def build_loss(recipe: Recipe) -> nn.Module:
    """The training loss of ``recipe`` (``train.loss``), wired like the model's components."""
    return _build("loss", recipe.train.loss, _recipe_values(recipe))


def _recipe_values(recipe: Recipe) -> dict[str, Any]:
    """The wired values that come from the recipe itself rather than from a built component."""
    return {"num_classes": recipe.model.num_classes}


def _build(family: str, params: ComponentParams, known: dict[str, Any]) -> Any:
    return build(family, params.name, **wired_arguments(family, known), **params.arguments())
