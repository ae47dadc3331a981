"""``sparseinst convert``: the authors' checkpoints and ImageNet ResNets into native files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from components import build
from components.pretrained import (
    Layout,
    detect_layout,
    imagenet_resnet_to_native,
    load_strict,
    official_to_native,
    read_state_dict,
)

from ..builder import build_model
from ..checkpoint import save_checkpoint
from ..data.coco import default_categories
from ..files import atomic_write, output_file
from ..recipe import Recipe, without_backbone_weights

BACKBONE_FORMAT = "sparseinst-backbone"


@dataclass(frozen=True)
class ConversionReport:
    source: Path
    output: Path
    layout: Layout
    tensors: int
    values: int


def convert_checkpoint(source: str | Path, output: str | Path, recipe: Recipe) -> ConversionReport:
    """Convert ``source`` for the model described by ``recipe`` and write ``output``.

    Strict: every key of the model must be filled, and no key of the source may be left over
    (the ImageNet classifier and BN counters excepted).
    """
    source = Path(source)
    output = output_file(Path(output), (".safetensors",), setting="output", inputs=[source])
    state = read_state_dict(source)
    layout = detect_layout(list(state))
    if layout == "official":
        model = build_model(recipe)
        load_strict(model, official_to_native(state), f"weights in {source}")
        names = recipe.model.class_names
        save_checkpoint(output, model, recipe, default_categories(recipe.model.num_classes, names),
                        {"converted_from": source.name})
        converted = model.state_dict()
    else:
        spec = without_backbone_weights(recipe).model.backbone
        backbone = build("backbone", spec.name, **spec.arguments())
        load_strict(backbone, imagenet_resnet_to_native(state), f"weights in {source}")
        converted = {k: v.contiguous() for k, v in backbone.state_dict().items()}
        metadata = {"format": BACKBONE_FORMAT, "backbone": spec.name, "converted_from": source.name}
        atomic_write(output, lambda tmp: save_file(converted, str(tmp), metadata=metadata))
    return ConversionReport(source, output, layout, len(converted), sum(v.numel() for v in converted.values()))
