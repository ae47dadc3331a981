"""ONNX export of a checkpoint, and an onnxruntime model that stands in for the PyTorch one.

The exported graph is the network with frozen batch norm folded in:

- input ``images``: float32 (B, 3, H, W), RGB normalized with the recipe's pixel mean and std
  (stored in the metadata), zero-padded bottom/right to a multiple of 32;
- outputs ``logits`` (B, N, C) class logits, ``objectness`` (B, N, 1) IoU-aware objectness
  logits and ``masks`` (B, N, H/4, W/4) mask logits, exactly ``SparseInst.forward``'s.

Decoding them is SPEC 1.5 (``components.postprocess.postprocess`` does it): score =
sqrt(sigmoid(logits) * sigmoid(objectness)), label = argmax; keep score > 0.005; multiply by
the mean mask probability inside (sigmoid(masks) > 0.45); upsample the kept masks bilinearly to
(H, W), crop the padding, resize to the original image, threshold at 0.45.

The metadata (``metadata_props``) holds the resolved recipe and the category names, so the
``.onnx`` file alone is enough for ``predict``/``eval``/``time --backend onnxruntime``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from components import SparseInst, SparseInstOutput

from .checkpoint import atomic_write, load_model
from .optimize import fold_frozen_batch_norm
from .recipe import Recipe, validate_recipe
from .timing import timing_size

OUTPUT_NAMES = ("logits", "objectness", "masks")
METADATA_RECIPE = "sparseinst.recipe"
METADATA_CATEGORIES = "sparseinst.categories"
METADATA_OUTPUTS = "sparseinst.outputs"
OUTPUTS_DOC = ("images: float32 (B,3,H,W) normalized RGB, padded to a multiple of 32 -> logits (B,N,C), "
               "objectness (B,N,1), masks (B,N,H/4,W/4) logits; decode as SparseInst (SPEC 1.5)")
MAX_DYNAMIC_STRIDES = 128  # dynamic H and W: up to 128 x 32 = 4096 pixels
MAX_DYNAMIC_BATCH = 256


class ExportError(RuntimeError):
    """The export or the ONNX runtime failed; the message says how."""


class RawOutputs(nn.Module):
    """The model with a tuple output, as ONNX needs."""

    def __init__(self, model: SparseInst) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        output = self.model(images)
        return output.logits, output.objectness, output.masks


def example_size(recipe: Recipe) -> tuple[int, int]:
    """The padded (H, W) of a 4:3 image at the recipe's test size: the export's example input."""
    spec = recipe.input
    divisor = spec.size_divisibility
    return tuple(math.ceil(side / divisor) * divisor for side in timing_size(spec.min_size_test, spec.max_size_test))


def export_onnx(weights: str | Path, out: str | Path, *, dynamic: bool = False,
                size: tuple[int, int] | None = None, batch: int = 1) -> Path:
    """Export a native checkpoint to ONNX at ``out`` (atomically).

    ``size`` (H, W, multiples of 32) is the example input, by default the recipe's test size for a
    4:3 image. With ``dynamic`` the batch, H and W are free (H and W multiples of 32).
    """
    model, checkpoint = load_model(weights)
    fold_frozen_batch_norm(model)
    height, width = size or example_size(checkpoint.recipe)
    divisor = checkpoint.recipe.input.size_divisibility
    if height % divisor or width % divisor:
        raise ExportError(f"export size {height}x{width}: both sides must be multiples of {divisor}")
    images = torch.zeros(batch, 3, height, width)
    dynamic_shapes = None
    if dynamic:
        strides_h = torch.export.Dim("height_strides", min=1, max=MAX_DYNAMIC_STRIDES)
        strides_w = torch.export.Dim("width_strides", min=1, max=MAX_DYNAMIC_STRIDES)
        dynamic_shapes = {"images": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH),
                                     2: divisor * strides_h, 3: divisor * strides_w}}
    try:
        program = torch.onnx.export(RawOutputs(model).eval(), (images,), input_names=["images"],
                                    output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes, dynamo=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs the reason
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    program.model.metadata_props.update({
        METADATA_RECIPE: json.dumps(checkpoint.recipe.dump(), sort_keys=True),
        METADATA_CATEGORIES: json.dumps(checkpoint.categories),
        METADATA_OUTPUTS: OUTPUTS_DOC,
    })
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: program.save(str(tmp)))
    return out


class OnnxModel(nn.Module):
    """An exported model run by onnxruntime, called like ``SparseInst`` (no activation maps)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_RECIPE not in metadata:
            raise ExportError(f"{self.path}: not exported by 'sparseinst export onnx' (no recipe in its metadata)")
        self.recipe: Recipe = validate_recipe(json.loads(metadata[METADATA_RECIPE]), f"{self.path} (stored recipe)")
        self.categories: list[dict] = json.loads(metadata.get(METADATA_CATEGORIES, "[]"))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: Tensor, return_maps: bool = False) -> SparseInstOutput:
        if return_maps:
            raise ExportError("the ONNX model has no activation-map output; use the .safetensors checkpoint")
        arrays = self.session.run(list(OUTPUT_NAMES), {self.input_name: images.detach().float().cpu().contiguous().numpy()})
        return SparseInstOutput(*(torch.from_numpy(a).to(images.device) for a in arrays))


def onnx_for(weights: str | Path) -> Path:
    """``weights`` itself if it is an ``.onnx`` file, otherwise a dynamic export of it into a
    temporary folder (kept for the life of the process)."""
    weights = Path(weights)
    if weights.suffix == ".onnx":
        return weights
    folder = Path(tempfile.mkdtemp(prefix="sparseinst-onnx-"))
    return export_onnx(weights, folder / f"{weights.stem}.onnx", dynamic=True)
