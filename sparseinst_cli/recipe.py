"""TOML recipes: the pydantic schema, ``extends``, ``--set`` overrides and readable errors.

The schema is the single source of defaults. Component sections (``model.backbone``,
``model.encoder``, ``model.iam``, ``model.decoder``) are unions over the registered components,
selected by ``name``; their parameters come from each component's typed signature.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tomllib
from pydantic import (
    Discriminator,
    Field,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)

from components.inference_defaults import MASK_THRESHOLD, MAX_DETECTIONS
from components.registry import FAMILIES, StrictModel, registry, unknown_name_message

from .defaults import CONF, Precision
from .errors import RecipeError
from .resources import builtin_recipe, builtin_recipe_names

# SPEC 1.1 (official): RGB pixel statistics, test resize and padding.
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
MIN_SIZE_TEST = 640
MAX_SIZE_TEST = 853
SIZE_DIVISIBILITY = 32

# SPEC 2 (official): augmentation and optimization, for a batch of 64 on 8 GPUs.
TRAIN_MIN_SIZES = tuple(range(416, 641, 32))
TRAIN_MAX_SIZE = 853
CROP_PROB = 0.5
CROP_RESIZE_SIZES = (400, 500, 600)
CROP_SIZE_RANGE = (384, 600)
BASE_LR = 5e-5
WEIGHT_DECAY = 0.05
BATCH_SIZE = 64
MAX_ITER = 270_000
LR_STEPS = (210_000, 250_000)
LR_GAMMA = 0.1
WARMUP_ITERS = 1000
WARMUP_FACTOR = 0.001
BACKBONE_LR_FACTOR = 1.0
REFERENCE_BATCH_SIZE = BATCH_SIZE  # the batch the official learning rate is for
LR_SCALING = "sqrt"  # AdamW: lr grows with the square root of the batch (Malladi et al., 2022)
EMA_DECAY = 0.9998
EMA_WARMUP = 2000  # steps: the decay ramps up as 1 - exp(-updates / EMA_WARMUP)

# Run bookkeeping (not from the paper).
CHECKPOINT_PERIOD = 5000
LOG_PERIOD = 20
DATA_WORKERS = 4

DEFAULT_COMPONENTS = {
    "backbone": "resnet50",
    "encoder": "instance_context",
    "iam": "group",
    "decoder": "iam_decoder",
    "matcher": "dice_hungarian",
    "loss": "sparseinst",
}
MODEL_FAMILIES = ("backbone", "encoder", "iam", "decoder")
FORMER_KEYS = {"inference.score_threshold": "inference.conf"}  # read with a warning for one release
TRAIN_FAMILIES = ("matcher", "loss")


class InputSection(StrictModel):
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = PIXEL_STD  # divides: zero gives NaN
    min_size_test: PositiveInt = MIN_SIZE_TEST
    max_size_test: PositiveInt = MAX_SIZE_TEST
    size_divisibility: PositiveInt = SIZE_DIVISIBILITY


class InferenceSection(StrictModel):
    """``conf``: instances scoring below it are left out of predictions (``eval`` scores every
    candidate regardless). ``score_threshold`` is its former name, read with a warning."""

    conf: Annotated[float, Field(ge=0, le=1)] = CONF
    mask_threshold: Annotated[float, Field(gt=0, lt=1)] = MASK_THRESHOLD
    max_detections: PositiveInt = MAX_DETECTIONS
    objectness_rescoring: bool = True  # off: score = class probability (paper Table 7 ablation)

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "score_threshold" in data:
            data = dict(data)
            value = data.pop("score_threshold")
            if "conf" in data:
                raise ValueError("give conf only (score_threshold is its former name)")
            warnings.warn(f"inference.score_threshold is deprecated and will be removed; it is now "
                          f"{FORMER_KEYS['inference.score_threshold']}", FutureWarning, stacklevel=2)
            data["conf"] = value
        return data


class AugmentationSection(StrictModel):
    """Training-time augmentation: flip, multi-scale resize and the optional "aug" crop."""

    flip: bool = True
    min_sizes: tuple[PositiveInt, ...] = TRAIN_MIN_SIZES
    max_size: PositiveInt = TRAIN_MAX_SIZE
    crop: bool = False
    crop_prob: Annotated[float, Field(ge=0, le=1)] = CROP_PROB
    crop_resize_sizes: tuple[PositiveInt, ...] = CROP_RESIZE_SIZES
    crop_size_range: tuple[PositiveInt, PositiveInt] = CROP_SIZE_RANGE


class SolverSection(StrictModel):
    """AdamW with linear warm-up, then step decay (``multistep``) or ``cosine`` decay to 0.

    ``batch_size`` counts images per optimizer step over all processes; each process runs
    ``batch_size / (processes * accumulate)`` images per forward pass.

    ``lr`` is the learning rate for ``reference_batch_size`` images per step; the run uses it
    scaled to ``batch_size`` by ``lr_scaling`` (``sqrt``: by sqrt(batch / reference), ``linear``,
    or ``none``). With ``scale_schedule`` the step counts (``max_iter``, ``lr_steps``,
    ``warmup_iters``) scale by reference / batch too, so the run sees as many images as the
    reference schedule. With ``epochs`` the length is given in passes over the training data
    instead of ``max_iter``, and ``lr_step_epochs`` replaces ``lr_steps``.
    """

    lr: Annotated[float, Field(gt=0)] = BASE_LR
    backbone_lr_factor: Annotated[float, Field(ge=0)] = BACKBONE_LR_FACTOR
    weight_decay: Annotated[float, Field(ge=0)] = WEIGHT_DECAY
    batch_size: PositiveInt = BATCH_SIZE
    reference_batch_size: PositiveInt = REFERENCE_BATCH_SIZE
    lr_scaling: Literal["sqrt", "linear", "none"] = LR_SCALING
    scale_schedule: bool = False
    accumulate: PositiveInt = 1
    max_iter: PositiveInt = MAX_ITER
    epochs: Annotated[float, Field(gt=0)] | None = None
    schedule: Literal["multistep", "cosine"] = "multistep"
    lr_steps: tuple[PositiveInt, ...] = LR_STEPS
    lr_step_epochs: tuple[Annotated[float, Field(gt=0)], ...] = ()
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = LR_GAMMA
    warmup_iters: Annotated[int, Field(ge=0)] = WARMUP_ITERS
    warmup_factor: Annotated[float, Field(gt=0, le=1)] = WARMUP_FACTOR
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _batch_divides(self) -> SolverSection:
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of accumulate ({self.accumulate})")
        if self.lr_step_epochs and self.epochs is None:
            raise ValueError("lr_step_epochs needs epochs (give lr_steps for a schedule in iterations)")
        return self

class DatasetPaths(StrictModel):
    """A COCO instances JSON and its image folder (relative paths: from the current directory)."""

    annotations: Path
    images: Path


class DataSection(StrictModel):
    train: DatasetPaths | None = None
    val: DatasetPaths | None = None


class TrainSectionBase(StrictModel):
    # autocast; matching and losses stay fp32. auto: bf16 where the device computes it natively
    # (resolved at the start and stored in the run's recipe.json), fp32 elsewhere.
    precision: Precision = Precision.fp32
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and tensor cores
    seed: int = 0
    workers: Annotated[int, Field(ge=0)] = DATA_WORKERS
    checkpoint_period: PositiveInt = CHECKPOINT_PERIOD
    eval_period: Annotated[int, Field(ge=0)] = 0  # 0: evaluate once, at the end
    # stop after this many validations in a row without a higher mask AP (best.safetensors keeps
    # the best); 0: never stop early
    patience: Annotated[int, Field(ge=0)] = 0
    log_period: PositiveInt = LOG_PERIOD
    tensorboard: bool = False
    ema: bool = False  # validate and write the exponential moving average of the weights
    ema_decay: Annotated[float, Field(gt=0, lt=1)] = EMA_DECAY
    ema_warmup: Annotated[float, Field(gt=0)] = EMA_WARMUP
    calibrate_init: bool = True  # rescale fresh layers on the first batch (calibration.py); off: the SPEC's init as is
    augmentation: AugmentationSection = AugmentationSection()
    solver: SolverSection = SolverSection()

    @field_serializer("precision")
    def _precision_name(self, precision: Precision | str) -> str:
        """The plain name, also where a copy holds the name itself (the run's resolved precision)."""
        return Precision(precision).value


class ModelSectionBase(StrictModel):
    """The class list and the components; ``init_from`` starts training from a trained model.

    ``init_from`` names a native checkpoint or an authors' ``.pth``/``.pkl``: every tensor whose
    name and shape fit is loaded, the rest keeps its fresh initialization, and class-head rows
    are copied for classes whose names match (case-insensitive, or through ``class_map``, which
    maps a training class to the checkpoint's name for it). ``init_strict`` refuses any tensor
    or class left fresh.
    """

    num_classes: PositiveInt = 80
    class_names: tuple[str, ...] | None = None
    init_from: Path | None = None
    class_map: dict[str, str] = {}
    init_strict: bool = False

    @field_validator("class_names")
    @classmethod
    def _names_unique(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @model_validator(mode="after")
    def _names_match_classes(self) -> ModelSectionBase:
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        if self.init_from is None and (self.class_map or self.init_strict):
            raise ValueError("class_map and init_strict apply to init_from, which is not set")
        return self


class RecipeBase(StrictModel):
    description: str = ""
    input: InputSection = InputSection()
    inference: InferenceSection = InferenceSection()
    data: DataSection = DataSection()

    def dump(self) -> dict[str, Any]:
        """The resolved recipe, every default filled in, as plain JSON-able data."""
        return self.model_dump(mode="json")


def _component_union(family: str) -> Any:
    reg = registry(family)
    default = DEFAULT_COMPONENTS[family]

    def choose(value: Any) -> str | None:
        if isinstance(value, Mapping):
            return value.get("name", default)
        return getattr(value, "name", None)

    members = tuple(Annotated[reg.params_model(name), Tag(name)] for name in reg.names())
    return Annotated[Union[members], Discriminator(choose)]  # noqa: UP007


@lru_cache(maxsize=8)
def _schema(component_names: tuple[tuple[str, ...], ...]) -> type[RecipeBase]:
    def components(families: tuple[str, ...]) -> dict[str, Any]:
        return {family: (_component_union(family), Field(default_factory=_default_component(family))) for family in families}

    model_section = create_model("ModelSection", __base__=ModelSectionBase, **components(MODEL_FAMILIES))
    train_section = create_model("TrainSection", __base__=TrainSectionBase, **components(TRAIN_FAMILIES))
    return create_model(
        "Recipe",
        __base__=RecipeBase,
        train=(train_section, Field(default_factory=train_section)),
        model=(model_section, Field(default_factory=model_section)),
    )


def _default_component(family: str) -> Any:
    return lambda: registry(family).params_model(DEFAULT_COMPONENTS[family])()


def recipe_schema() -> type[RecipeBase]:
    """The recipe model for the components registered now (plugins included)."""
    return _schema(tuple(tuple(registry(family).names()) for family in FAMILIES))


Recipe = RecipeBase  # the type to annotate with; instances come from ``recipe_schema()``


def without_backbone_weights(recipe: RecipeBase) -> RecipeBase:
    """``recipe`` without its backbone's ``weights`` (the ImageNet file a training run starts
    from), for a model whose weights are held elsewhere: a checkpoint, a converted file, a
    converted authors' model. Unchanged when the backbone has no ``weights`` parameter."""
    backbone = recipe.model.backbone
    if "weights" not in type(backbone).model_fields:
        return recipe
    model = recipe.model.model_copy(update={"backbone": backbone.model_copy(update={"weights": None})})
    return recipe.model_copy(update={"model": model})


def validate_recipe(data: Mapping[str, Any], source: str = "<recipe>") -> RecipeBase:
    try:
        return recipe_schema().model_validate(dict(data))
    except ValidationError as exc:
        raise RecipeError(source, format_validation_errors(exc, data)) from None


@dataclass(frozen=True)
class RecipeFile:
    """Where a recipe's text comes from: a user's file or a shipped recipe."""

    label: str  # for messages, and the identity that finds ``extends`` cycles
    text: Callable[[], str]
    folder: Path | None  # where a relative ``extends`` is looked up first (None: shipped)


def find_recipe(ref: str | Path, relative_to: Path | None = None) -> RecipeFile:
    """A path as given, relative to the including recipe, or a built-in recipe name."""
    candidates = ([relative_to / ref] if relative_to is not None else []) + [Path(ref)]
    for path in candidates:
        if path.is_file():
            path = path.resolve()
            return RecipeFile(str(path), lambda: path.read_text(encoding="utf-8"), path.parent)
    shipped = builtin_recipe(str(ref))
    if shipped is not None:
        return RecipeFile(f"built-in {ref}", lambda: shipped.read_text(encoding="utf-8"), None)
    if Path(ref).is_dir():
        raise RecipeError(str(ref), ["is a folder, not a recipe file"])
    known = builtin_recipe_names()
    hint = difflib.get_close_matches(str(ref), known, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise RecipeError(str(ref), [f"no such file or built-in recipe{suggestion}; built-in: {', '.join(known)}"])


def read_recipe_data(ref: str | Path, _seen: tuple[RecipeFile, ...] = ()) -> dict[str, Any]:
    """Read a recipe file and merge it over the chain of recipes it ``extends``."""
    source = find_recipe(ref, _seen[-1].folder if _seen else None)
    if source.label in (seen.label for seen in _seen):
        chain = " -> ".join(Path(s.label).name for s in (*_seen, source))
        raise RecipeError(str(ref), [f"extends forms a cycle: {chain}"])
    try:
        data = tomllib.loads(source.text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(source.label, [f"not valid TOML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(source.label, [f"cannot read: {exc}"]) from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(source.label, ["extends: must be the name or path of one recipe"])
    return deep_merge(read_recipe_data(base, (*_seen, source)), data)


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists too) replaces the base's."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            # A different component starts from its own defaults, not the other one's parameters.
            if "name" in value and merged[key].get("name", value["name"]) != value["name"]:
                merged[key] = dict(value)
            else:
                merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value``; the value is read as TOML (``4``, ``true``, ``[4, 5]``, ``"x"``),
    or taken as a bare string when it is not valid TOML; ``null`` (which TOML lacks) unsets an
    optional value, such as a recipe's ``clip_grad_norm`` or ``[data.val]``."""
    key, sep, raw = assignment.partition("=")
    path = [part.strip() for part in key.strip().split(".")]
    if not sep or not all(path):
        raise RecipeError("override", [f"'{assignment}': expected KEY.PATH=VALUE"], setting="overrides")
    if ".".join(path) in FORMER_KEYS:
        current = FORMER_KEYS[".".join(path)]
        warnings.warn(f"{'.'.join(path)} is deprecated and will be removed; it is now {current}", FutureWarning,
                      stacklevel=2)
        path = current.split(".")
    try:
        value = None if raw.strip() == "null" else tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError("override", [f"{'.'.join(path[: depth + 1])}: is a value, not a table"],
                              setting="overrides")
        node = child
    if path[-1] == "name" and node.get("name", value) != value:
        node.clear()  # a different component: drop the parameters of the one it replaces
    node[path[-1]] = value


def load_recipe(ref: str | Path, overrides: Sequence[str] = ()) -> RecipeBase:
    """Read, merge, override and validate a recipe given by path or built-in name."""
    return recipe_from_data(read_recipe_data(ref), str(ref), overrides)


def recipe_from_data(data: Mapping[str, Any], source: str, overrides: Sequence[str] = ()) -> RecipeBase:
    """A recipe from plain data (a checkpoint's or a run's stored one) with ``overrides``
    (``a.b=value``) applied, validated; ``source`` names it in errors."""
    data = copy.deepcopy(dict(data))
    for assignment in overrides:
        apply_override(data, assignment)
    return validate_recipe(data, source)


def stored_recipe(data: Mapping[str, Any], source: str, overrides: Sequence[str] = ()) -> RecipeBase:
    """A recipe this toolkit stored (in a checkpoint, an ONNX file or a run's ``recipe.json``),
    with ``overrides`` applied. Stored recipes are resolved dumps of the version that wrote them;
    before ``inference.conf`` existed, ``inference.score_threshold`` held the SPEC's candidate cut
    (0.005), not a confidence threshold, so it is dropped and today's default applies."""
    data = copy.deepcopy(dict(data))
    if isinstance(data.get("inference"), dict):
        data["inference"].pop("score_threshold", None)
    return recipe_from_data(data, source, overrides)


def format_validation_errors(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    """One ``field.path: message`` line per error, without pydantic's union tags."""
    lines = []
    for error in exc.errors(include_url=False):
        location = _field_path(error["loc"], data)
        ctx = error.get("ctx") or {}
        if error["type"] == "union_tag_invalid":
            family = location.rsplit(".", 1)[-1]
            known = [tag.strip().strip("'") for tag in str(ctx.get("expected_tags", "")).split(",")]
            message = unknown_name_message(family, str(ctx.get("tag")), known)
            location = f"{location}.name"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing" and not location:
                message = "required"
        lines.append(f"{location or '<top level>'}: {message}")
    return lines


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(node, Mapping) and item in node:
            node = node[item]
        elif isinstance(node, Mapping) and _is_component_tag(item, node):
            continue
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
            parts[-1] = f"{parts[-1]}[{item}]"
            continue
        else:
            node = None
        parts.append(str(item))
    return ".".join(parts)


def _is_component_tag(item: Any, node: Mapping[str, Any]) -> bool:
    if "name" in node:
        return item == node["name"]
    return item in DEFAULT_COMPONENTS.values()

