"""A model exported to ONNX (``sparseinst export onnx``), run by onnxruntime in place of the
PyTorch network. The file's metadata carries the recipe and the categories, so the ``.onnx``
file alone is enough to predict."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import torch
from torch import Tensor, nn

from components import SparseInstOutput

from ..errors import ExportError
from ..files import not_found
from ..recipe import Recipe, stored_recipe

OUTPUT_NAMES = ("logits", "objectness", "masks")
METADATA_RECIPE = "sparseinst.recipe"
METADATA_CATEGORIES = "sparseinst.categories"
METADATA_OUTPUTS = "sparseinst.outputs"


class OnnxModel(nn.Module):
    """An exported model run by onnxruntime, called like ``SparseInst`` (no activation maps)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(not_found(self.path, "ONNX file"))
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        # onnxruntime's threads spin for a while after each run; that would take the cores from
        # the post-processing that follows (measured: its mask step 1.5x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_RECIPE not in metadata:
            raise ExportError(f"{self.path}: not exported by 'sparseinst export onnx' (no recipe in its metadata)")
        self.recipe: Recipe = stored_recipe(json.loads(metadata[METADATA_RECIPE]), f"{self.path} (stored recipe)")
        self.categories: list[dict] = json.loads(metadata.get(METADATA_CATEGORIES, "[]"))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: Tensor, return_maps: bool = False) -> SparseInstOutput:
        if return_maps:
            raise ExportError("the ONNX model has no activation-map output; use the .safetensors checkpoint")
        arrays = self.session.run(list(OUTPUT_NAMES), {self.input_name: images.detach().float().cpu().contiguous().numpy()})
        return SparseInstOutput(*(torch.from_numpy(a).to(images.device) for a in arrays))
