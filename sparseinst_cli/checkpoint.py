"""Native checkpoints: safetensors weights whose metadata carries the resolved recipe and the
categories, so that a checkpoint alone is enough to predict. Writes are atomic."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from components import SparseInst
from components.pretrained import load_strict

from .builder import build_model
from .errors import WeightsError
from .files import atomic_write, not_found
from .recipe import Recipe, stored_recipe, without_backbone_weights

FORMAT = "sparseinst"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    state: dict[str, Tensor]
    recipe: Recipe
    categories: list[dict]  # COCO style: {"id": int, "name": str}, in label order
    metadata: dict[str, str]

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]


def save_checkpoint(
    path: str | Path,
    weights: nn.Module | Mapping[str, Tensor],
    recipe: Recipe,
    categories: Sequence[Mapping],
    extra: Mapping[str, str] | None = None,
) -> Path:
    path = Path(path)
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    stored = without_backbone_weights(recipe).dump()  # the checkpoint holds the weights now
    if stored["model"].get("init_from") is not None:  # likewise: the start is part of the weights
        stored["model"].update(init_from=None, class_map={}, init_strict=False)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "recipe": json.dumps(stored, sort_keys=True),
        "categories": json.dumps([{"id": int(c["id"]), "name": str(c["name"])} for c in categories]),
        **(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def read_checkpoint(path: str | Path, overrides: Sequence[str] = ()) -> Checkpoint:
    """Read a native checkpoint; ``overrides`` (``a.b=value``) apply to its stored recipe."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(not_found(path))
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise WeightsError(
            f"{path}: not a safetensors checkpoint ({exc}); "
            "convert other formats with 'sparseinst convert'"
        ) from None
    if metadata.get("format") != FORMAT or "recipe" not in metadata:
        raise WeightsError(f"{path}: safetensors file without a sparseinst recipe; convert it with 'sparseinst convert'")
    recipe = stored_recipe(_metadata_json(path, metadata, "recipe", dict), f"{path} (stored recipe)", overrides)
    categories = _metadata_json(path, metadata, "categories", list)
    if not all(isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), str) for c in categories):
        raise WeightsError(f"{path}: its categories need an integer 'id' and a string 'name' each")
    if len(categories) != recipe.model.num_classes:
        raise WeightsError(f"{path}: {len(categories)} categories stored for a model of {recipe.model.num_classes} "
                           f"classes")
    return Checkpoint(state, recipe, categories, metadata)


def _metadata_json(path: Path, metadata: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(metadata[key])
    except (KeyError, ValueError):
        raise WeightsError(f"{path}: its metadata '{key}' is missing or not JSON") from None
    if not isinstance(value, kind):
        raise WeightsError(f"{path}: its metadata '{key}' is not a JSON {'object' if kind is dict else 'list'}")
    return value


def load_model(path: str | Path, overrides: Sequence[str] = ()) -> tuple[SparseInst, Checkpoint]:
    """The model described by a checkpoint, with its weights loaded strictly, in eval mode."""
    checkpoint = read_checkpoint(path, overrides)
    model = build_model(checkpoint.recipe)
    load_strict(model, checkpoint.state, f"weights in {path}")
    return model.eval(), checkpoint
