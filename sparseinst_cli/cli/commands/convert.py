"""``sparseinst convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import console, fail
from ..options import Overrides
from ..progress import ProgressBar


def convert(
    context: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="The authors' checkpoint (.pth/.pkl), ImageNet ResNet weights, or a model name from "
                               "'sparseinst models' (downloaded first).")],
    output: Annotated[Path, typer.Argument(help="Native .safetensors file to write.")],
    recipe: Annotated[Optional[str], typer.Option(  # noqa: UP007 - typer needs Optional
        "--recipe", "-r", help="Recipe describing the model the weights are for (a model name brings its own).")
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Convert weights into the native format, strictly (every key must match).

    The authors' SparseInst checkpoints become full checkpoints usable by predict and eval;
    torchvision or timm ImageNet ResNets become backbone weights for model.backbone.weights.

    Examples:
      sparseinst convert sparse_inst_r50_giam_aug_2b7d68.pth r50_giam_aug.safetensors --recipe r50_giam_aug
      sparseinst convert r50_giam_aug r50_giam_aug.safetensors
      sparseinst convert resnet50-0676ba61.pth r50_imagenet.safetensors --recipe r50_giam
    """
    from ...recipe import load_recipe
    from ...weights.conversion import convert_checkpoint
    from ...weights.zoo import available_model, fetch_checkpoint, is_model_name

    if is_model_name(source):
        model = available_model(source)
        with ProgressBar() as progress:
            path = fetch_checkpoint(model, progress)
        resolved = load_recipe(recipe or model.recipe, [f"input.min_size_test={model.input_size}", *(overrides or [])])
    elif recipe is None:
        raise fail("--recipe is needed for a checkpoint file (it describes the model the weights are for)")
    else:
        path, resolved = Path(source), load_recipe(recipe, overrides or [])
    report = convert_checkpoint(path, output, resolved)
    kind = "SparseInst checkpoint" if report.layout == "official" else "backbone weights"
    console.print(f"wrote {kind} {report.output} ({report.tensors} tensors, {report.values:,} values) from {report.source}")
