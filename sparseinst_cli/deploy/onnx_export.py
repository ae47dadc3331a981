"""ONNX export of a checkpoint, for onnxruntime (``inference.onnx_runtime``) and other runtimes.

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

from components import SparseInst

from ..checkpoint import load_model
from ..data.images import typical_size
from ..errors import ExportError
from ..files import atomic_write, output_file
from ..inference.fast_path import fold_frozen_batch_norm
from ..inference.onnx_runtime import (
    METADATA_CATEGORIES,
    METADATA_OUTPUTS,
    METADATA_RECIPE,
    OUTPUT_NAMES,
)
from ..recipe import Recipe

OUTPUTS_DOC = ("images: float32 (B,3,H,W) normalized RGB, padded to a multiple of 32 -> logits (B,N,C), "
               "objectness (B,N,1), masks (B,N,H/4,W/4) logits; decode as SparseInst (SPEC 1.5)")
MAX_DYNAMIC_STRIDES = 128  # dynamic H and W: up to 128 x 32 = 4096 pixels
MAX_DYNAMIC_BATCH = 256


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
    return tuple(math.ceil(side / divisor) * divisor for side in typical_size(spec.min_size_test, spec.max_size_test))


def export_onnx(weights: str | Path, out: str | Path, *, dynamic: bool = False,
                size: tuple[int, int] | None = None, batch: int = 1) -> Path:
    """Export a native checkpoint to ONNX at ``out`` (atomically).

    ``size`` (H, W, multiples of 32) is the example input, by default the recipe's test size for a
    4:3 image. With ``dynamic`` the batch, H and W are free (H and W multiples of 32).
    """
    out = output_file(Path(out), (".onnx",), inputs=[Path(weights)])
    model, checkpoint = load_model(weights)
    fold_frozen_batch_norm(model)
    height, width = size or example_size(checkpoint.recipe)
    divisor = checkpoint.recipe.input.size_divisibility
    if height < divisor or width < divisor or height % divisor or width % divisor:
        raise ExportError(f"export size {height}x{width}: both sides must be positive multiples of {divisor}")
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
    atomic_write(out, lambda tmp: program.save(str(tmp)))
    return out


def onnx_for(weights: str | Path) -> Path:
    """``weights`` itself if it is an ``.onnx`` file, otherwise a dynamic export of it into a
    temporary folder (kept for the life of the process)."""
    weights = Path(weights)
    if weights.suffix == ".onnx":
        return weights
    folder = Path(tempfile.mkdtemp(prefix="sparseinst-onnx-"))
    return export_onnx(weights, folder / f"{weights.stem}.onnx", dynamic=True)
