"""Opening a model to run: a checkpoint on PyTorch (as trained, or on the fast path in reduced
precision), a checkpoint on onnxruntime (an ``.onnx`` file, or exported on the fly), or a
recipe with random weights to try the pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.coco import match_categories
from ..defaults import Backend, Precision
from ..errors import SparseInstError
from ..inference.predictor import Predictor, resolve_device
from ..progress import SILENT, Progress
from ..weights.zoo import resolve_weights
from .onnx_export import onnx_for

CHECKPOINT_SUFFIXES = (".safetensors", ".onnx")


# The ways to run one model that ``sparseinst time --variants`` sets side by side.
VARIANTS = {
    "plain": {"fast": False},
    "fast": {"fast": True},
    "fp16": {"fast": True, "dtype": Precision.fp16},
    "bf16": {"fast": True, "dtype": Precision.bf16},
    "auto": {"fast": True, "dtype": Precision.auto},
    "compile": {"fast": True, "compile": True},
    "onnxruntime": {"backend": Backend.onnxruntime},
}


def is_checkpoint(source: str | Path) -> bool:
    """A model file (else a recipe's name or path)."""
    return str(source).endswith(CHECKPOINT_SUFFIXES)


@dataclass(frozen=True)
class ModelSource:
    """A model and how to run it. Exactly one of ``weights`` (a checkpoint, or the name of a zoo
    model: downloaded and converted on first use) or ``recipe`` (random weights, seeded). On
    PyTorch the fast path (batch norm folded, NHWC, Winograd in fp32 on CPU: the plain model's
    instances, to float tolerance) is the default; ``fast=False`` runs the model as trained. A
    ``dtype`` other than fp32 (``auto``: bf16 where native) implies the fast path; ``compile``
    adds ``torch.compile``."""

    weights: Path | str | None = None
    recipe: str | None = None
    device: str = "cpu"
    overrides: tuple[str, ...] = ()
    backend: Backend = Backend.torch
    fast: bool = True
    dtype: Precision = Precision.fp32
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.weights is None) == (self.recipe is None):
            raise SparseInstError("give exactly one of weights (a checkpoint) or recipe (random weights)",
                                  setting="weights")
        resolve_device(self.device)
        if self.compile and not self.fast:
            raise SparseInstError("compile needs the fast path", setting="fast")
        if self.backend == Backend.onnxruntime:
            if self.weights is None:
                raise SparseInstError("the onnxruntime backend runs checkpoints, not recipes", setting="backend")
            if self.dtype != Precision.fp32 or self.compile:
                raise SparseInstError("dtype and compile apply to the torch backend (an ONNX model is already "
                                      "optimized)", setting="backend")
        elif self.weights is not None and Path(self.weights).suffix == ".onnx":
            raise SparseInstError(f"{self.weights}: an ONNX model runs on the onnxruntime backend",
                                  setting="backend=onnxruntime")

    @classmethod
    def parse(cls, source: str, *, checkpoint: bool | None = None, **options) -> ModelSource:
        """A checkpoint path or a recipe (name or path), with the same run ``options``;
        ``checkpoint=True`` takes ``source`` as weights whatever its name (a zoo model)."""
        if checkpoint is None:
            checkpoint = is_checkpoint(source)
        return cls(weights=source, **options) if checkpoint else cls(recipe=source, **options)

    @property
    def optimized(self) -> bool:
        """Whether PyTorch runs the fast path (an ONNX model is folded already)."""
        return self.backend == Backend.torch and (self.fast or self.dtype != Precision.fp32)

    @property
    def name(self) -> str:
        """A short label: the file's or recipe's stem, with the path it runs on."""
        stem = Path(self.weights).stem if self.weights is not None else Path(str(self.recipe)).stem
        path = " (onnxruntime)" if self.backend != Backend.torch else " (fast)" if self.optimized else ""
        return stem + path + (" compiled" if self.compile else "")

    def open(self, dataset_categories: list[dict] | None = None, progress: Progress = SILENT) -> Predictor:
        """The predictor. With ``dataset_categories`` its classes take a dataset's category ids
        (``match_categories``), so that its results score against that dataset. ``progress``
        sees a zoo model's download."""
        weights = None if self.weights is None else resolve_weights(self.weights, progress)
        if self.backend == Backend.onnxruntime:
            predictor = Predictor.from_onnx(onnx_for(weights), self.device, self.overrides)
        elif weights is not None:
            predictor = Predictor.from_checkpoint(weights, self.device, self.overrides, fast=False)
        else:
            predictor = Predictor.from_recipe(self.recipe, self.device, self.overrides, seed=self.seed)
        if self.optimized:
            predictor.optimize(self.dtype, self.compile)
        elif self.backend == Backend.torch:
            predictor.plain()  # the reference throughout, the post-processing's masks included
        if dataset_categories is not None:
            return predictor.with_categories(match_categories(predictor.categories, dataset_categories))
        return predictor


def model_variants(sources: list[str], names: list[str], *, checkpoints: Sequence[str] = (),
                   **options) -> list[ModelSource]:
    """Each of ``sources`` (checkpoints or recipes; those in ``checkpoints`` are weights whatever
    their names) run each way in ``names`` (keys of ``VARIANTS``), in that order; an ``.onnx``
    file runs on onnxruntime only, once."""
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise SparseInstError(f"variants: unknown {', '.join(unknown) or '(none given)'}; choose from "
                              f"{', '.join(VARIANTS)}", setting="variants")
    base = {**options, "fast": True, "dtype": Precision.fp32, "compile": False, "backend": Backend.torch}
    models = []
    for source in sources:
        checkpoint = source in checkpoints or is_checkpoint(source)
        if str(source).endswith(".onnx"):
            models.append(ModelSource.parse(source, **{**base, "backend": Backend.onnxruntime}))
        elif not checkpoint and "onnxruntime" in names:
            raise SparseInstError(f"{source}: the onnxruntime variant runs checkpoints, not recipes",
                                  setting="variants")
        else:
            models.extend(ModelSource.parse(source, checkpoint=checkpoint, **{**base, **VARIANTS[name]})
                          for name in names)
    return models
