"""Options and checks shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..errors import fail
from ..inference import Predictor

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


def check_device(device: str) -> None:
    """Exit with a one-line error when a CUDA device is asked for but absent."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise fail(f"device '{device}' requested but CUDA is not available")


def load_predictor(weights: Path, device: str, overrides: list[str]) -> Predictor:
    """A predictor for a native checkpoint (errors are reported by the caller's ``user_errors``)."""
    return Predictor.from_checkpoint(weights, device, overrides)
