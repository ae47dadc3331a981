"""Build a SparseInst model from a validated recipe."""

from __future__ import annotations

from functools import partial

from components import SparseInst, build
from components.registry import ComponentError

from .errors import RecipeError
from .recipe import Recipe


def build_model(recipe: Recipe) -> SparseInst:
    """Backbone -> encoder -> decoder (with its IAM), wired by channel counts.

    A backbone must expose ``out_channels`` (C3, C4, C5) and an encoder ``out_channels`` (D).
    """
    spec = recipe.model
    try:
        backbone = build("backbone", spec.backbone.name, **spec.backbone.arguments())
        encoder = build("encoder", spec.encoder.name, in_channels=backbone.out_channels, **spec.encoder.arguments())
        iam = partial(build, "iam", spec.iam.name, **spec.iam.arguments())
        decoder = build(
            "decoder",
            spec.decoder.name,
            in_channels=encoder.out_channels,
            num_classes=spec.num_classes,
            iam=iam,
            **spec.decoder.arguments(),
        )
    except (ComponentError, ValueError, TypeError) as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError("model", [f"cannot build the model: {exc}"]) from exc
    return SparseInst(backbone, encoder, decoder)
