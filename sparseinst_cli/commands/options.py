"""Options and checks shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..errors import fail
from ..evaluation import match_categories
from ..export import onnx_for
from ..inference import INFERENCE_DTYPES, Predictor

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
BACKENDS = ("torch", "onnxruntime")
FastOption = Annotated[bool, typer.Option(
    "--fast", help="Fast inference: batch norm folded into the convolutions, NHWC activations.")]
DtypeOption = Annotated[str, typer.Option("--dtype", help="fp32, or fp16/bf16 autocast for the network (implies --fast).")]
BackendOption = Annotated[str, typer.Option(
    "--backend", help="torch, or onnxruntime (an .onnx file, or the checkpoint exported on the fly).")]


def check_device(device: str) -> None:
    """Exit with a one-line error when a CUDA device is asked for but absent."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise fail(f"device '{device}' requested but CUDA is not available")


def load_predictor(weights: Path, device: str, overrides: list[str], backend: str = "torch", *,
                   fast: bool = False, dtype: str = "fp32", dataset_categories: list[dict] | None = None) -> Predictor:
    """A predictor for a native checkpoint, run by PyTorch (optionally optimized) or, exported on
    the fly unless it is an ``.onnx`` file already, by onnxruntime. With ``dataset_categories``
    its classes take a dataset's category ids (``match_categories``), so its results score
    against that dataset. Errors are reported by the caller's ``user_errors``."""
    predictor = _predictor(weights, device, overrides, backend, fast, dtype)
    if dataset_categories is not None:
        predictor.categories = match_categories(predictor.categories, dataset_categories)
    return predictor


def _predictor(weights: Path, device: str, overrides: list[str], backend: str, fast: bool, dtype: str) -> Predictor:
    if backend not in BACKENDS:
        raise fail(f"--backend: expected one of {', '.join(BACKENDS)}, got '{backend}'")
    if dtype not in INFERENCE_DTYPES:
        raise fail(f"--dtype: expected one of {', '.join(INFERENCE_DTYPES)}, got '{dtype}'")
    if backend == "onnxruntime":
        if fast or dtype != "fp32":
            raise fail("--fast and --dtype apply to the torch backend (the ONNX model is already optimized)")
        return Predictor.from_onnx(onnx_for(weights), device, overrides)
    if Path(weights).suffix == ".onnx":
        raise fail(f"{weights}: an ONNX model runs with --backend onnxruntime")
    predictor = Predictor.from_checkpoint(weights, device, overrides)
    return predictor.optimize(dtype) if fast or dtype != "fp32" else predictor
