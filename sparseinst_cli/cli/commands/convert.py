"""``sparseinst convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...deploy.conversion import convert_checkpoint
from ...recipe import load_recipe
from ..console import console
from ..options import Overrides


def convert(
    context: typer.Context,
    source: Annotated[Path, typer.Argument(help="The authors' checkpoint (.pth/.pkl) or ImageNet ResNet weights.")],
    output: Annotated[Path, typer.Argument(help="Native .safetensors file to write.")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe describing the model the weights are for.")],
    overrides: Overrides = None,
) -> None:
    """Convert weights into the native format, strictly (every key must match).

    The authors' SparseInst checkpoints become full checkpoints usable by predict and eval;
    torchvision or timm ImageNet ResNets become backbone weights for model.backbone.weights.

    Examples:
      sparseinst convert sparse_inst_r50_giam_aug.pth r50_giam.safetensors --recipe r50_giam
      sparseinst convert resnet50-0676ba61.pth r50_imagenet.safetensors --recipe r50_giam
    """
    report = convert_checkpoint(source, output, load_recipe(recipe, overrides or []))
    kind = "SparseInst checkpoint" if report.layout == "official" else "backbone weights"
    console.print(f"wrote {kind} {report.output} ({report.tensors} tensors, {report.values:,} values) from {report.source}")
