"""The Python inference API: load a model, then ``predictor(images)`` -> per-image instances."""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from components import Instances, SparseInst, SparseInstOutput
from components.postprocess import postprocess

from ..builder import build_model
from ..checkpoint import load_model
from ..data.coco import default_categories
from ..data.images import ImageInput, as_rgb_array, pad_batch, resized_shape
from ..defaults import DEFAULT_OVERLAP, Precision
from ..errors import RecipeError, SparseInstError
from ..progress import SILENT, Progress
from ..recipe import Recipe, load_recipe, recipe_from_data
from ..weights.zoo import pretrained
from .fast_path import optimize_for_inference
from .onnx_runtime import OnnxModel
from .results import Prediction


def is_single_image(images: object) -> bool:
    """Whether ``images`` is one image rather than a sequence of them (iterating one array would
    yield its rows, and one path its characters)."""
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    return isinstance(images, (str, Path, Image.Image))


CPU_INFO = "/proc/cpuinfo"
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
INT8_DOT_PRODUCT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # int8 dot products summed in 32 bits
INFERENCE_DTYPES = {Precision.fp32.value: None, Precision.fp16.value: torch.float16, Precision.bf16.value: torch.bfloat16}


CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "avx512_vnni": "VNNI",
                "avx_vnni": "AVX-VNNI", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        lines = Path(CPU_INFO).read_text().split("\n\n", 1)[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def cpu_name() -> str:
    """The CPU as figures should name it: model, family/model numbers and the vector extensions that
    set inference speed, e.g. 'AMD EPYC (family 25 model 17; AVX2, AVX-512, AVX512-BF16, VNNI)'."""
    info = cpu_info()
    if not info:
        return platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    features = ", ".join(name for flag, name in CPU_FEATURES.items() if flag in flags)
    return f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')} " \
           f"model {info.get('model', '?')}; {features or 'no AVX2'})"


def int8_sums_saturate() -> bool:
    """Whether this CPU multiplies uint8 by int8 with 16-bit intermediate sums (x86 with AVX2 but
    no VNNI or AMX: two products of full-range values can overflow them), so that int8 weights
    should keep to 7 bits (onnxruntime's ``reduce_range``)."""
    flags = set(cpu_info().get("flags", "").split())
    return "avx2" in flags and not flags & INT8_DOT_PRODUCT_FLAGS


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (not emulated through fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(set(cpu_info().get("flags", "").split()) & NATIVE_BF16_FLAGS)


def resolve_precision(dtype: str | Precision, device: torch.device) -> str:
    """``dtype`` as one of fp32, fp16, bf16 (``auto`` decided for ``device``)."""
    dtype = dtype.value if isinstance(dtype, Precision) else dtype
    if dtype == Precision.auto.value:
        return Precision.bf16.value if native_bf16(device) else Precision.fp32.value
    if dtype not in INFERENCE_DTYPES:
        raise SparseInstError(f"dtype must be one of {', '.join(p.value for p in Precision)}, got {dtype!r}",
                              setting="dtype")
    return dtype


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refused when it does not exist here."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SparseInstError(f"device '{device}': expected cpu, cuda or cuda:N", setting="device") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SparseInstError(f"device '{device}' requested but CUDA is not available", setting="device")
    if resolved.type not in ("cpu", "cuda"):
        raise SparseInstError(f"device '{device}': expected cpu, cuda or cuda:N", setting="device")
    return resolved


@dataclass
class Batch:
    images: Tensor  # (B, 3, H, W) normalized, zero-padded to a multiple of size_divisibility
    image_sizes: list[tuple[int, int]]  # resized (h, w) of each image inside the padding
    original_sizes: list[tuple[int, int]]


class Predictor:
    """Runs a model on images: resize, normalize, pad, forward, post-process.

    >>> predictor = Predictor.from_pretrained("r50_giam_aug")  # or from_checkpoint("model.safetensors")
    >>> prediction = predictor("street.jpg")[0]  # masks, scores, labels, boxes, names; plot(), save()

    Instances scoring below the recipe's ``inference.conf`` are left out unless a call gives its
    own ``conf`` (0: every candidate, as COCO AP needs).
    """

    def __init__(
        self, model: SparseInst, recipe: Recipe, categories: list[dict], device: str | torch.device = "cpu"
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.plain_model = self.model  # what ``optimize`` starts from, and ``plain`` returns to
        self.recipe = recipe
        self._categories = list(categories)
        self.pixel_mean = torch.tensor(recipe.input.pixel_mean, device=self.device).view(3, 1, 1)
        self.pixel_std = torch.tensor(recipe.input.pixel_std, device=self.device).view(3, 1, 1)
        self.autocast_dtype: torch.dtype | None = None
        self.memory_format = torch.contiguous_format
        self.fast_masks = True  # the mask kernel on CPU (identical masks); plain() uses the reference

    def optimize(self, dtype: str | Precision = "fp32", compile: bool = False) -> Predictor:
        """Switch to the fast inference path: batch norm folded, NHWC, Winograd 3x3 convolutions for
        fp32 on CPU (unless compiled), optional ``torch.compile`` and fp16/bf16 autocast (post-processing
        stays fp32), masks by the memory-speed kernel. Starts from the plain model each time.
        Returns ``self``."""
        dtype = resolve_precision(dtype, self.device)
        if isinstance(self.plain_model, SparseInst):
            winograd = self.device.type == "cpu" and dtype == Precision.fp32 and not compile
            self.model = optimize_for_inference(self.plain_model, winograd=winograd, compile=compile)
            self.memory_format = torch.channels_last
        self.fast_masks = True
        return self.use_precision(dtype)

    def plain(self) -> Predictor:
        """Back to the model as loaded, in fp32, with the reference post-processing (``F.interpolate``
        masks). Returns ``self``."""
        self.model, self.memory_format, self.fast_masks = self.plain_model, torch.contiguous_format, False
        return self.use_precision(Precision.fp32)

    def use_precision(self, dtype: str | Precision) -> Predictor:
        """Run the network under ``dtype`` autocast ("fp16", "bf16", "auto"), or plainly ("fp32")."""
        self.autocast_dtype = INFERENCE_DTYPES[resolve_precision(dtype, self.device)]
        return self

    @property
    def precision(self) -> str:
        return next(name for name, dtype in INFERENCE_DTYPES.items() if dtype == self.autocast_dtype)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", overrides: Sequence[str] = (), *, fast: bool = True
    ) -> Predictor:
        """The checkpoint's model, on the fast path unless ``fast=False`` (same instances as the
        plain model, to float tolerance; ``plain()`` switches back)."""
        model, checkpoint = load_model(path, overrides)
        predictor = cls(model, checkpoint.recipe, checkpoint.categories, device)
        return predictor.optimize() if fast else predictor

    @classmethod
    def from_pretrained(
        cls, name: str, device: str | torch.device = "cpu", overrides: Sequence[str] = (), *, fast: bool = True,
        progress: Progress = SILENT,
    ) -> Predictor:
        """A model of the zoo (``sparseinst models``) by name: downloaded, converted and cached on
        first use (``progress`` sees the download), then read from the cache."""
        return cls.from_checkpoint(pretrained(name, progress), device, overrides, fast=fast)

    @classmethod
    def from_onnx(
        cls, path: str | Path, device: str | torch.device = "cpu", overrides: Sequence[str] = ()
    ) -> Predictor:
        """A model exported by ``sparseinst export onnx``, run by onnxruntime. Overrides may change
        the ``input`` and ``inference`` sections only (the network is fixed in the file)."""
        return cls._from_exported(OnnxModel(path, device), path, device, overrides)

    @classmethod
    def from_openvino(
        cls, path: str | Path, device: str | torch.device = "cpu", overrides: Sequence[str] = ()
    ) -> Predictor:
        """A model exported by ``sparseinst export openvino`` (``.xml``) or ``export onnx``
        (``.onnx``), run by OpenVINO on the CPU (``pip install 'sparseinst[openvino]'``). Overrides
        may change the ``input`` and ``inference`` sections only (the network is fixed in the file)."""
        from .openvino_runtime import OpenVinoModel

        return cls._from_exported(OpenVinoModel(path, device), path, device, overrides)

    @classmethod
    def _from_exported(cls, model, path: str | Path, device: str | torch.device, overrides: Sequence[str]) -> Predictor:
        """A predictor around an exported network, its stored recipe changed by ``overrides``."""
        recipe = model.recipe
        if overrides:
            fixed = [o for o in overrides if not o.split("=", 1)[0].strip().startswith(("input.", "inference."))]
            if fixed:
                raise RecipeError(str(path), [f"{o}: an exported model's network is fixed; only input.* and "
                                              f"inference.* can be overridden" for o in fixed])
            recipe = recipe_from_data(recipe.dump(), f"{path} (stored recipe)", overrides)
        return cls(model, recipe, model.categories, device)

    @classmethod
    def from_recipe(
        cls, recipe: str | Path | Recipe, device: str | torch.device = "cpu", overrides: Sequence[str] = (), seed: int = 0
    ) -> Predictor:
        """A randomly initialized model (seeded), for trying the pipeline without weights. Its
        classes are the recipe's ``class_names``, or ``class_0``, ``class_1``, ... by index."""
        if not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe, overrides)
        torch.manual_seed(seed)
        names = recipe.model.class_names or tuple(f"class_{i}" for i in range(recipe.model.num_classes))
        categories = default_categories(recipe.model.num_classes, names)
        return cls(build_model(recipe), recipe, categories, device)

    @property
    def categories(self) -> list[dict]:
        """The model's classes in label order, COCO style (``{"id": ..., "name": ...}``)."""
        return self._categories

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    def with_categories(self, categories: Sequence[dict]) -> Predictor:
        """The same model (shared, not copied) reporting ``categories`` for its labels: e.g. a
        dataset's category ids, so that its results score against that dataset."""
        if len(categories) != len(self._categories):
            raise SparseInstError(f"{len(categories)} categories given for a model of {len(self._categories)} classes",
                                  setting="categories")
        renamed = copy.copy(self)
        renamed._categories = list(categories)
        return renamed

    def preprocess(self, images: Sequence[np.ndarray]) -> Batch:
        """RGB uint8 arrays (H, W, 3) -> a padded, normalized batch (SPEC 1.1)."""
        spec = self.recipe.input
        tensors, sizes, originals = [], [], []
        for image in map(as_rgb_array, images):
            size = resized_shape(*image.shape[:2], spec.min_size_test, spec.max_size_test)
            tensors.append(self.normalized(image, size))
            sizes.append(size)
            originals.append(tuple(image.shape[:2]))
        return Batch(pad_batch(tensors, spec.size_divisibility), sizes, originals)

    def normalized(self, image: np.ndarray, size: tuple[int, int]) -> Tensor:
        """An RGB uint8 array (H, W, 3) resized to ``size`` (h, w) and normalized: (3, h, w) float."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float()
        return (TF.resize(tensor, list(size), antialias=True) - self.pixel_mean) / self.pixel_std

    @torch.inference_mode()
    def forward(self, batch: Batch, return_maps: bool = False) -> SparseInstOutput:
        images = batch.images.contiguous(memory_format=self.memory_format)
        if self.autocast_dtype is None:
            return self.model(images, return_maps=return_maps)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            output = self.model(images, return_maps=return_maps)
        return SparseInstOutput(*(None if t is None else t.float() for t in output))

    @torch.inference_mode()
    def predict(
        self, images: ImageInput | Sequence[ImageInput], bgr: bool = False, conf: float | None = None
    ) -> list[Prediction]:
        """A ``Prediction`` per image, at its original size: the instances scoring at least
        ``conf`` (default: the recipe's ``inference.conf``), best first. ``images``: paths, PIL
        images or uint8 arrays (H, W, 3), RGB, or BGR with ``bgr`` (OpenCV's images and video
        frames); read-only arrays are fine. One image alone (not in a list) gives a list of one;
        a (B, H, W, 3) array is B images."""
        if is_single_image(images):
            images = [images]
        sources = [image if isinstance(image, (str, Path)) else None for image in images]
        arrays = [as_rgb_array(image, bgr) for image in images]
        batch = self.preprocess(arrays)
        found = self.postprocess(self.forward(batch), batch, conf=conf)
        return [Prediction.of(instances, self.categories, array, source)
                for instances, array, source in zip(found, arrays, sources)]

    def postprocess(
        self, output: SparseInstOutput, batch: Batch, on_stage: Callable[[str], None] | None = None, *,
        conf: float | None = None,
    ) -> list[Instances]:
        """Raw outputs for ``batch`` -> instances per image scoring at least ``conf`` (default: the
        recipe's), with the recipe's inference settings (``on_stage``: see ``components.postprocess``)."""
        spec = self.recipe.inference
        return postprocess(
            output,
            tuple(batch.images.shape[-2:]),
            batch.image_sizes,
            batch.original_sizes,
            conf=spec.conf if conf is None else conf,
            mask_threshold=spec.mask_threshold,
            max_detections=spec.max_detections,
            objectness_rescoring=spec.objectness_rescoring,
            fast_masks=self.fast_masks,
            on_stage=on_stage,
        )

    __call__ = predict

    def track(self, source: str | Path | Iterable, *, conf: float | None = None, stride: int = 1,
              max_frames: int | None = None) -> Iterator[Prediction]:
        """Predictions frame by frame with a track id per instance (``Prediction.track_ids``) that
        holds while the object stays in view: ``source`` is a video file, a camera index ("0"), a
        stream URL, or an iterable of images.

        >>> for frame in predictor.track("street.mp4"):
        ...     print(frame.track_ids, frame.names)
        """
        from .video import track_frames

        return track_frames(self, source, conf=conf, stride=stride, max_frames=max_frames)

    def predict_tiled(self, image: ImageInput, *, tile: int, overlap: float = DEFAULT_OVERLAP,
                      conf: float | None = None, full_image: bool = True, bgr: bool = False) -> Prediction:
        """One large image predicted on overlapping ``tile`` x ``tile`` tiles (and, with
        ``full_image``, whole), the instances merged across the seams, at the original size: small
        objects that the model's input size would shrink away. See ``tiling.predict_tiled``."""
        from .tiling import predict_tiled

        return predict_tiled(self, image, tile=tile, overlap=overlap, conf=conf, full_image=full_image, bgr=bgr)
