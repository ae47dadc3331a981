"""Opening a model to run: a checkpoint on PyTorch (as trained, or on the fast path in reduced
precision), on onnxruntime or OpenVINO (an exported ``.onnx`` or ``.xml`` file, or the checkpoint
exported on the fly), on whichever of them is fastest on this CPU (``auto``), or a recipe with
random weights to try the pipeline."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch

from components import Instances

from ..data.coco import match_categories
from ..data.images import read_image
from ..defaults import Backend, Precision
from ..errors import SparseInstError, WeightsError
from ..files import not_found, output_folder, write_json
from ..inference.predictor import Predictor, cpu_name, resolve_device
from ..progress import SILENT, Progress
from ..resources import sample_images
from ..weights.zoo import resolve_weights, zoo_home
from .onnx_export import export_onnx, onnx_for

CHECKPOINT_SUFFIXES = (".safetensors", ".onnx", ".xml")
EXPORTED_BACKENDS = {".onnx": (Backend.onnxruntime, Backend.openvino), ".xml": (Backend.openvino,)}
CPU_ONLY_BACKENDS = (Backend.openvino,)
OPTIONAL_MODULES = {Backend.openvino: "openvino"}  # backends that need a package of their own

# The ways to run one model that ``sparseinst time --variants`` sets side by side, and the names
# that stand for several of them.
VARIANTS = {
    "plain": {"fast": False},
    "fast": {"fast": True},
    "fp16": {"fast": True, "dtype": Precision.fp16},
    "bf16": {"fast": True, "dtype": Precision.bf16},
    "auto": {"fast": True, "dtype": Precision.auto},
    "compile": {"fast": True, "compile": True},
    "onnxruntime": {"backend": Backend.onnxruntime},
    "openvino": {"backend": Backend.openvino},
}
VARIANT_GROUPS = {"backends": ("fast", "onnxruntime", "openvino")}  # openvino where it is installed


@dataclass(frozen=True)
class Tolerance:
    """How far another backend's instances may be from PyTorch's and still count as the same:
    every instance matched by one of the same class with at least ``min_iou`` mask IoU and at
    most ``max_score`` score difference."""

    min_iou: float
    max_score: float


# fp32 backends sum in other orders than PyTorch, nothing more: on the tests' small models and the
# trained demo model (AMD EPYC Zen 1, AVX2) onnxruntime and OpenVINO scores differ by < 1e-5 and
# masks by < 0.01% of their pixels. The bounds leave room for larger models and other CPUs' kernels.
FP32_TOLERANCE = Tolerance(min_iou=0.99, max_score=1e-3)
AUTO_WARMUP = 2  # untimed runs per backend before ``auto`` times it
AUTO_RUNS = 5  # timed runs per backend; ``auto`` compares their medians
AUTO_CACHE = "backends.json"  # ``auto``'s decisions, in the zoo's cache folder
EXPORTS = "exports"  # checkpoints exported on the fly for onnxruntime and OpenVINO, in the cache folder
DIGEST_LENGTH = 12  # hex digits of a hash in an export's file name


def installed_backends() -> list[Backend]:
    """The backends this installation can run (the optional ones where their package is there)."""
    return [backend for backend in Backend if backend != Backend.auto
            and (backend not in OPTIONAL_MODULES or importlib.util.find_spec(OPTIONAL_MODULES[backend]) is not None)]


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
    adds ``torch.compile``. onnxruntime and OpenVINO run an exported file, or the checkpoint
    exported on the fly (once: ``exported_onnx``); ``auto`` runs whichever installed backend was
    fastest on this CPU while giving the fast path's instances (``choose_backend``)."""

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
        device = resolve_device(self.device)
        if self.compile and not self.fast:
            raise SparseInstError("compile needs the fast path", setting="fast")
        suffix = "" if self.weights is None else Path(self.weights).suffix
        if suffix in EXPORTED_BACKENDS and self.backend not in (Backend.auto, *EXPORTED_BACKENDS[suffix]):
            readers = EXPORTED_BACKENDS[suffix]
            raise SparseInstError(f"{self.weights}: {exported_kind(suffix)} runs on the "
                                  f"{' or '.join(b.value for b in readers)} backend",
                                  setting=f"backend={readers[0].value}")
        if self.backend == Backend.torch:
            return
        if self.weights is None:
            raise SparseInstError(f"the {self.backend.value} backend runs checkpoints, not recipes", setting="backend")
        if self.dtype != Precision.fp32 or self.compile:
            raise SparseInstError(f"dtype and compile apply to the torch backend, not {self.backend.value} (an "
                                  "exported model is already optimized)", setting="backend")
        if self.backend in CPU_ONLY_BACKENDS and device.type != "cpu":
            raise SparseInstError(f"the {self.backend.value} backend runs on the CPU, not {self.device}",
                                  setting="device")

    @classmethod
    def parse(cls, source: str, *, checkpoint: bool | None = None, **options) -> ModelSource:
        """A checkpoint path or a recipe (name or path), with the same run ``options``;
        ``checkpoint=True`` takes ``source`` as weights whatever its name (a zoo model)."""
        if checkpoint is None:
            checkpoint = is_checkpoint(source)
        return cls(weights=source, **options) if checkpoint else cls(recipe=source, **options)

    @property
    def optimized(self) -> bool:
        """Whether PyTorch runs the fast path (an exported model is folded already)."""
        return self.backend == Backend.torch and (self.fast or self.dtype != Precision.fp32)

    @property
    def name(self) -> str:
        """A short label: the file's or recipe's stem, with the path it runs on."""
        stem = Path(self.weights).stem if self.weights is not None else Path(str(self.recipe)).stem
        path = f" ({self.backend.value})" if self.backend != Backend.torch else " (fast)" if self.optimized else ""
        return stem + path + (" compiled" if self.compile else "")

    def open(self, dataset_categories: list[dict] | None = None, progress: Progress = SILENT) -> Predictor:
        """The predictor. With ``dataset_categories`` its classes take a dataset's category ids
        (``match_categories``), so that its results score against that dataset. ``progress``
        sees a zoo model's download, and ``auto``'s choice (one line: the backend and each one's
        time)."""
        weights = None if self.weights is None else resolve_weights(self.weights, progress)
        if self.backend == Backend.auto:
            choice = choose_backend(weights, self.device, self.overrides, progress)
            progress.note(choice.summary)
            predictor = choice.predictor or open_backend(choice.backend, weights, self.device, self.overrides)
        elif self.backend != Backend.torch:
            predictor = open_backend(self.backend, weights, self.device, self.overrides)
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


def exported_kind(suffix: str) -> str:
    """What a file of an exported ``suffix`` is, for messages."""
    return "an OpenVINO IR" if suffix == ".xml" else "an ONNX model"


def open_backend(backend: Backend, weights: Path, device: str = "cpu", overrides: Sequence[str] = ()) -> Predictor:
    """``weights`` (a checkpoint, or a file exported for ``backend``) run by ``backend``, on the
    fast path for torch."""
    if backend == Backend.torch:
        return Predictor.from_checkpoint(weights, device, overrides)
    source = weights if weights.suffix in EXPORTED_BACKENDS else exported_onnx(weights)
    if backend == Backend.onnxruntime:
        return Predictor.from_onnx(source, device, overrides)
    return Predictor.from_openvino(source, device, overrides)


def exported_onnx(weights: Path) -> Path:
    """A dynamic ONNX export of the checkpoint ``weights``, which onnxruntime and OpenVINO both
    read. It is kept in the cache folder (``exports/``, one per checkpoint file: made again when
    the file, torch or this toolkit's version change), so that later runs skip the export; where
    that folder cannot be written, in a temporary folder for the life of the process."""
    if not weights.is_file():
        return onnx_for(weights)  # the checkpoint reader names the problem
    stat = weights.stat()
    return _exported_onnx(weights.resolve(), stat.st_size, stat.st_mtime_ns, zoo_home())


@functools.cache
def _exported_onnx(weights: Path, size: int, mtime_ns: int, home: Path) -> Path:
    folder = home / EXPORTS
    source = digest(str(weights))
    path = folder / f"{weights.stem}-{source}-{digest(size, mtime_ns, torch.__version__, version('sparseinst'))}.onnx"
    if path.is_file():
        return path
    try:
        output_folder(folder)
    except SparseInstError:
        return onnx_for(weights)
    export_onnx(weights, path, dynamic=True)
    for older in folder.glob(f"*-{source}-*.onnx"):  # the same checkpoint before it changed
        if older != path:
            older.unlink(missing_ok=True)
    return path


def digest(*values: object) -> str:
    """A short hash of ``values``, for file names."""
    return hashlib.sha256(json.dumps([str(v) for v in values]).encode()).hexdigest()[:DIGEST_LENGTH]


@dataclass
class BackendChoice:
    """``auto``'s pick for one model on one CPU: the backend, each candidate's median end-to-end
    time in ms, and why the others were left out (disagreeing instances, a failure)."""

    backend: Backend
    times_ms: dict[str, float]
    left_out: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    predictor: Predictor | None = field(default=None, repr=False, compare=False)  # the chosen one, if opened

    @property
    def summary(self) -> str:
        """One line: the choice and why."""
        times = ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(self.times_ms.items(), key=lambda t: t[1]))
        others = "".join(f"; {name} left out: {why}" for name, why in self.left_out.items())
        origin = f"measured earlier on this CPU (cache: {zoo_home() / AUTO_CACHE})" if self.cached else \
            "measured on this CPU"
        return f"backend auto: {self.backend.value}, the fastest giving the same instances ({times}; {origin}){others}"

    def to_json(self) -> dict:
        return {"backend": self.backend.value, "times_ms": self.times_ms, "left_out": self.left_out}

    @classmethod
    def from_json(cls, record: object) -> BackendChoice | None:
        """A cached choice, or None for a missing or damaged record (measured again)."""
        try:
            return cls(Backend(record["backend"]), dict(record["times_ms"]), dict(record["left_out"]), cached=True)
        except (KeyError, TypeError, ValueError):
            return None


def choose_backend(weights: Path, device: str = "cpu", overrides: Sequence[str] = (),
                   progress: Progress = SILENT) -> BackendChoice:
    """The fastest installed backend for ``weights`` on this machine among those whose instances on
    a probe image (the bundled sample) agree with the reference's within ``FP32_TOLERANCE``: the
    reference is the PyTorch fast path for a checkpoint, the first backend that reads an exported
    file otherwise. Each is timed end to end (``AUTO_WARMUP`` then ``AUTO_RUNS`` runs, the
    recipe's test size). The decision is kept in the cache folder per file version, CPU, thread
    count, device and overrides, so that later calls answer at once."""
    if not Path(weights).is_file():
        raise WeightsError(not_found(Path(weights), "checkpoint"), setting="weights")
    key = choice_key(weights, device, overrides)
    cached = BackendChoice.from_json(read_choices().get(key))
    if cached is not None:
        return cached
    candidates = [b for b in installed_backends() if b in EXPORTED_BACKENDS.get(weights.suffix, list(Backend))
                  and (b not in CPU_ONLY_BACKENDS or torch.device(device).type == "cpu")]
    image = read_image(sample_images()[0])
    times, left_out, predictors, reference = {}, {}, {}, None
    for backend in candidates:
        progress.note(f"backend auto: timing {backend.value} ...")
        try:
            predictor = open_backend(backend, weights, device, overrides)
            conf = predictor.recipe.inference.conf
            found = predictor(image, conf=max(0.0, conf - FP32_TOLERANCE.max_score))[0]
        except (SparseInstError, RuntimeError) as exc:
            left_out[backend.value] = str(exc).strip().splitlines()[0]
            continue
        if reference is None:
            reference = found
        else:
            problem = disagreement(reference, found, FP32_TOLERANCE, conf)
            if problem:
                left_out[backend.value] = problem
                continue
        times[backend.value], predictors[backend] = end_to_end_ms(predictor, image, conf), predictor
    if not times:
        raise SparseInstError(f"{weights}: no backend could run it ({'; '.join(left_out.values())})", setting="backend")
    best = Backend(min(times, key=times.get))
    choice = BackendChoice(best, times, left_out, predictor=predictors[best])
    save_choice(key, choice)
    return choice


def end_to_end_ms(predictor: Predictor, image, conf: float) -> float:
    """The median milliseconds of ``predictor`` on ``image``, from reading the array to the
    instances, after ``AUTO_WARMUP`` untimed runs."""
    for _ in range(AUTO_WARMUP):
        predictor(image, conf=conf)
    times = []
    for _ in range(AUTO_RUNS):
        start = time.perf_counter()
        predictor(image, conf=conf)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def disagreement(reference: Instances, other: Instances, tolerance: Tolerance, conf: float) -> str | None:
    """Why ``other`` does not give ``reference``'s instances scoring at least ``conf`` within
    ``tolerance`` (None when it does). Both should hold the instances down to ``conf`` less
    ``max_score``: one that close to the threshold may fall on either side of it."""
    for first, second, role in ((reference, other, "missing"), (other, reference, "extra")):
        for index in (first.scores >= conf + tolerance.max_score).nonzero().flatten().tolist():
            mask = first.masks[index]
            union = (second.masks | mask).flatten(1).sum(1).clamp(min=1)
            ious = (second.masks & mask).flatten(1).sum(1) / union
            same = (second.labels == first.labels[index]) & ((second.scores - first.scores[index]).abs()
                                                               <= tolerance.max_score)
            best = float((ious * same).max()) if len(second) else 0.0
            if best < tolerance.min_iou:
                return f"{role} instance (class {int(first.labels[index])}, score {float(first.scores[index]):.3f}, " \
                       f"best mask IoU {best:.3f} with the same class and score)"
    return None


def choice_key(weights: Path, device: str, overrides: Sequence[str]) -> str:
    """What ``auto``'s decision depends on: the file (path, size, modification time), the CPU,
    torch's thread count, the device, the overrides and the backends installed."""
    stat = Path(weights).stat()
    return json.dumps([str(Path(weights).resolve()), stat.st_size, stat.st_mtime_ns, cpu_name(),
                       torch.get_num_threads(), str(device), list(overrides),
                       [b.value for b in installed_backends()]])


def read_choices() -> dict[str, dict]:
    """``auto``'s cached decisions (none when the file is missing or unreadable: they are measured again)."""
    try:
        choices = json.loads((zoo_home() / AUTO_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def save_choice(key: str, choice: BackendChoice) -> None:
    """Keep ``choice`` under ``key`` in the cache (a cache that cannot be written is skipped)."""
    try:
        write_json(zoo_home() / AUTO_CACHE, {**read_choices(), key: choice.to_json()})
    except OSError:
        pass


def model_variants(sources: list[str], names: list[str], *, checkpoints: Sequence[str] = (),
                   **options) -> list[ModelSource]:
    """Each of ``sources`` (checkpoints or recipes; those in ``checkpoints`` are weights whatever
    their names) run each way in ``names`` (keys of ``VARIANTS``, or of ``VARIANT_GROUPS``), in
    that order; an ``.onnx`` file runs on onnxruntime only, once, and an ``.xml`` file on OpenVINO."""
    names = expand_variants(names)
    exported = [name for name in names if VARIANTS[name].get("backend", Backend.torch) != Backend.torch]
    base = {**options, "fast": True, "dtype": Precision.fp32, "compile": False, "backend": Backend.torch}
    models = []
    for source in sources:
        checkpoint = source in checkpoints or is_checkpoint(source)
        suffix = Path(str(source)).suffix
        if suffix in EXPORTED_BACKENDS:
            models.append(ModelSource.parse(source, **{**base, "backend": EXPORTED_BACKENDS[suffix][0]}))
        elif not checkpoint and exported:
            raise SparseInstError(f"{source}: the {', '.join(exported)} variants run checkpoints, not recipes",
                                  setting="variants")
        else:
            models.extend(ModelSource.parse(source, checkpoint=checkpoint, **{**base, **VARIANTS[name]})
                          for name in names)
    return models


def expand_variants(names: Sequence[str]) -> list[str]:
    """``names`` with each group (``backends``) replaced by its variants (those installed), in order,
    once each; unknown names refused."""
    unknown = [name for name in names if name not in VARIANTS and name not in VARIANT_GROUPS]
    if unknown or not names:
        raise SparseInstError(f"variants: unknown {', '.join(unknown) or '(none given)'}; choose from "
                              f"{', '.join([*VARIANTS, *VARIANT_GROUPS])}", setting="variants")
    installed = {b.value for b in installed_backends()}
    expanded: list[str] = []
    for name in names:
        members = [v for v in VARIANT_GROUPS[name] if VARIANTS[v].get("backend", Backend.torch).value in installed] \
            if name in VARIANT_GROUPS else [name]
        expanded.extend(member for member in members if member not in expanded)
    return expanded
