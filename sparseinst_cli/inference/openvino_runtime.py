"""A model run by OpenVINO on the CPU in place of the PyTorch network: an IR written by
``sparseinst export openvino`` (``.xml`` with its ``.bin``), or an ``.onnx`` file of
``sparseinst export onnx`` read directly. The recipe and the categories travel in the model's
runtime info, so the file alone is enough to predict.

OpenVINO is an optional dependency (``pip install 'sparseinst[openvino]'``); this module imports
it only when a model is opened.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import torch
from torch import Tensor, nn

from components import SparseInstOutput

from ..errors import ExportError
from ..files import not_found
from ..recipe import Recipe, stored_recipe
from .onnx_runtime import METADATA_CATEGORIES, METADATA_RECIPE, OUTPUT_NAMES

IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"  # the IR's weights, beside its .xml
IR_ROOT = "net"  # the root element of every OpenVINO IR .xml
MODEL_SUFFIXES = (IR_SUFFIX, ".onnx")
METADATA_SECTION = "sparseinst"  # the IR's runtime info section written by the export
ONNX_METADATA_SECTION = "framework"  # where OpenVINO's ONNX reader puts a file's metadata_props
INSTALL_HINT = "pip install 'sparseinst[openvino]'"


def import_openvino() -> Any:
    """The ``openvino`` module, or one line saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise ExportError(f"the openvino backend needs OpenVINO: {INSTALL_HINT}", setting="backend") from None
    return openvino


@functools.cache
def core() -> Any:
    """The process's ``openvino.Core`` (it finds the devices and plugins once)."""
    return import_openvino().Core()


def info_path(key: str) -> list[str]:
    """Where the IR keeps the metadata ``key`` (``sparseinst.recipe`` -> sparseinst/recipe)."""
    return [METADATA_SECTION, key.removeprefix(f"{METADATA_SECTION}.")]


def metadata(model: Any, key: str) -> str | None:
    """The value of ``key`` (``sparseinst.recipe``, ...) in an OpenVINO model's runtime info: the
    export's own section, or the ONNX file's metadata as OpenVINO's reader keeps it."""
    for path in (info_path(key), [ONNX_METADATA_SECTION, key]):
        if model.has_rt_info(path):
            return model.get_rt_info(path).astype(str)
    return None


def read_model(path: str | Path) -> Any:
    """An ``.xml`` IR or an ``.onnx`` file as an ``openvino.Model``, refused in one line when it is
    missing, of another kind, or not readable."""
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ExportError(f"{path}: the openvino backend reads an OpenVINO IR (.xml) or an .onnx file",
                          setting="weights")
    if not path.is_file():
        raise ExportError(not_found(path, "OpenVINO IR" if path.suffix == IR_SUFFIX else "ONNX file"))
    check_model_file(path)
    try:
        return core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
        raise ExportError(f"{path}: not a model OpenVINO can read ({last_line(exc)})") from None


def check_model_file(path: Path) -> None:
    """Refuse a file that is not an IR (or not ONNX) before OpenVINO reads it: OpenVINO would try
    each of its readers in turn, print their complaints to stderr and raise a message that names
    only its own source line."""
    if path.suffix == ".onnx":
        import onnx

        try:
            onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises its own exception types
            raise ExportError(f"{path}: not an ONNX model ({last_line(exc)})") from None
        return
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not an OpenVINO IR (not valid XML: {exc})") from None
    if root.tag != IR_ROOT:
        raise ExportError(f"{path}: not an OpenVINO IR (its XML root is <{root.tag}>, not <{IR_ROOT}>)")
    weights = path.with_suffix(WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise ExportError(f"{path}: its weights {weights.name} are missing; keep the .bin beside the .xml")


def last_line(exc: Exception) -> str:
    """The informative line of an exception from a C++ library (OpenVINO's first names its source
    file), or its type when it says nothing."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class OpenVinoModel(nn.Module):
    """An exported model compiled by OpenVINO for the CPU, called like ``SparseInst`` (no
    activation maps). The network computes in fp32 (OpenVINO would pick bf16 on CPUs with AMX or
    AVX512-BF16), or in int8 where the file was quantized; it uses torch's thread count."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        if torch.device(device).type != "cpu":
            raise ExportError(f"the openvino backend runs on the CPU, not {device}", setting="device")
        model = read_model(self.path)
        recipe = metadata(model, METADATA_RECIPE)
        if recipe is None:
            raise ExportError(f"{self.path}: not exported by 'sparseinst export' (no recipe in its runtime info)")
        self.recipe: Recipe = stored_recipe(json.loads(recipe), f"{self.path} (stored recipe)")
        self.categories: list[dict] = json.loads(metadata(model, METADATA_CATEGORIES) or "[]")
        settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                    "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        try:
            self.compiled = core().compile_model(model, "CPU", settings)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise ExportError(f"{self.path}: OpenVINO cannot compile it ({last_line(exc)})") from None
        self.request = self.compiled.create_infer_request()

    def forward(self, images: Tensor, return_maps: bool = False) -> SparseInstOutput:
        if return_maps:
            raise ExportError("the OpenVINO model has no activation-map output; use the .safetensors checkpoint")
        results = self.request.infer([images.detach().float().cpu().contiguous().numpy()], share_outputs=False)
        return SparseInstOutput(*(torch.from_numpy(results[name]).to(images.device) for name in OUTPUT_NAMES))

