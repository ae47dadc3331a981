"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..deploy.backends import Backend
from ..inference.predictor import Precision

RUNS = Path("runs")  # where commands write unless told otherwise: RUNS / "eval", RUNS / RECIPE, ...

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
FastOption = Annotated[bool, typer.Option(
    "--fast/--plain", help="The fast path (batch norm folded into the convolutions, NHWC, Winograd): the plain "
                           "model's instances to float tolerance; --plain runs the model as trained.")]
DtypeOption = Annotated[Precision, typer.Option(
    "--dtype", help="fp32, fp16/bf16 autocast for the network, or auto: bf16 where the hardware has it "
                    "natively, else fp32 (not fp32: implies --fast).")]
BackendOption = Annotated[Backend, typer.Option(
    "--backend", help="torch, or onnxruntime (an .onnx file, or the checkpoint exported on the fly).")]
DataOption = Annotated[Path, typer.Option("--data", help="COCO instances JSON (the ground truth).", show_default=False)]
ImagesOption = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    "--images", help="Image folder of --data (needed to run a model).")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
