"""Starting a model from a trained one whose classes (or instance count) differ: ``init_from``.

Every tensor of the new model whose name and shape match the source's is loaded; the rest keeps
the initialization it was built with (the SPEC's). The class head is transferred by class name:
the row of each training class whose name the source knows (case-insensitive, or through
``class_map``) is copied, the others keep the prior-probability initialization. Optimizer,
schedule and step are not part of this; training starts from step 0.

A model whose decoder draws its masks at stride 4 (``mask_stride = 4``) loads everything of a
stride-8 or authors' source but its stride-4 detail layer, which keeps its zero initialization
(reported as re-initialized), so its masks start as the source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from components.pretrained import (
    detect_layout,
    is_native_state,
    load_strict,
    official_to_native,
    read_state_dict,
)

from ..builder import build_model
from ..checkpoint import FORMAT, read_checkpoint
from ..data.coco import default_categories
from ..errors import WeightsError
from ..recipe import Recipe, without_backbone_weights

CLASS_HEAD = ("decoder.cls_score.weight", "decoder.cls_score.bias")
OFFICIAL_CLASS_WEIGHT = "decoder.inst_branch.cls_score.weight"
OFFICIAL_IAM_WEIGHT = "decoder.inst_branch.iam_conv.weight"
OFFICIAL_MASK_STRIDE = 8  # every authors' model draws its masks on F's grid


@dataclass
class SourceModel:
    """A trained model's tensors in this project's layout, and its class names (None: unnamed)."""

    state: dict[str, Tensor]
    class_names: list[str] | None
    description: str


@dataclass
class TransferReport:
    """What ``init_from`` did, tensor by tensor and class by class."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)  # kept their fresh initialization
    unused: list[str] = field(default_factory=list)  # source tensors the model has no place for
    class_rows: dict[str, str] = field(default_factory=dict)  # training class -> source class copied
    fresh_classes: list[str] = field(default_factory=list)  # training classes left at the prior

    def fresh_parameters(self, model: nn.Module) -> set[str]:
        """Names of the model's parameters that were not loaded (whole tensors only)."""
        return {name for name, _ in model.named_parameters() if name in self.reinitialized}

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "reinitialized": self.reinitialized,
            "unused": self.unused,
            "class_rows": self.class_rows,
            "fresh_classes": self.fresh_classes,
        }


def read_source(path: str | Path, recipe: Recipe) -> SourceModel:
    """The tensors and class names of a native checkpoint, a native state dict (``last.pt``) or
    an authors' checkpoint, which is converted strictly for ``recipe``'s architecture with the
    class count and instance count it was trained with. Weights holding NaN or infinite values
    are refused here, before training would fail on them."""
    source = _read_source(Path(path), recipe)
    broken = [name for name, tensor in source.state.items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
        raise WeightsError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({shown}); not a usable "
                           f"starting point", setting="init_from")
    return source


def _read_source(path: Path, recipe: Recipe) -> SourceModel:
    if path.suffix == ".safetensors" and _is_native_checkpoint(path):
        checkpoint = read_checkpoint(path)
        return SourceModel(checkpoint.state, checkpoint.class_names, f"{path} (native checkpoint)")
    state = read_state_dict(path)
    if is_native_state(state):
        return SourceModel(state, None, f"{path} (native state dict, classes unnamed)")
    try:
        layout = detect_layout(list(state))
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    if layout == "imagenet":
        raise WeightsError(f"{path}: ImageNet backbone weights, not a SparseInst model; "
                           "give them as model.backbone.weights instead")
    return _convert_official(path, state, recipe)


def _is_native_checkpoint(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - unreadable here means: let read_state_dict report it
        return False


def _convert_official(path: Path, state: dict[str, Tensor], recipe: Recipe) -> SourceModel:
    """The authors' checkpoint through the strict conversion, into the recipe's architecture
    (with the authors' stride-8 masks: a ``mask_stride = 4`` model takes what fits, its stride-4
    detail layer stays fresh)."""
    if OFFICIAL_CLASS_WEIGHT not in state or OFFICIAL_IAM_WEIGHT not in state:
        raise WeightsError(f"{path}: an authors' checkpoint without {OFFICIAL_CLASS_WEIGHT} or {OFFICIAL_IAM_WEIGHT}")
    num_classes = int(state[OFFICIAL_CLASS_WEIGHT].shape[0])
    groups = getattr(recipe.model.iam, "groups", 1)
    num_instances = int(state[OFFICIAL_IAM_WEIGHT].shape[0]) // groups
    update: dict = {"num_instances": num_instances}
    if "mask_stride" in type(recipe.model.decoder).model_fields:
        update["mask_stride"] = OFFICIAL_MASK_STRIDE
    decoder = recipe.model.decoder.model_copy(update=update)
    model_section = recipe.model.model_copy(update={
        "num_classes": num_classes, "class_names": None, "decoder": decoder, "init_from": None})
    model = build_model(without_backbone_weights(recipe.model_copy(update={"model": model_section})))
    load_strict(model, official_to_native(state), f"weights in {path} (for the recipe's architecture)")
    names = [c["name"] for c in default_categories(num_classes)]
    named = names if num_classes == len(names) and not names[0].startswith("class_") else None
    return SourceModel(model.state_dict(), named, f"{path} (authors' checkpoint, {num_classes} classes)")


def transfer(
    model: nn.Module,
    source: SourceModel,
    class_names: Sequence[str],
    class_map: Mapping[str, str] | None = None,
    strict: bool = False,
) -> TransferReport:
    """Load ``source`` into ``model`` (in place) as far as names, shapes and class names allow."""
    class_map = dict(class_map or {})
    report = TransferReport(source.description)
    _check_class_map(class_map, class_names, source.class_names)
    target = model.state_dict()
    updates: dict[str, Tensor] = {}
    for name, tensor in target.items():
        if name in CLASS_HEAD:
            continue
        value = source.state.get(name)
        if value is not None and value.shape == tensor.shape:
            updates[name] = value.to(tensor.dtype)
            report.loaded.append(name)
        else:
            report.reinitialized.append(name)
    report.unused = [name for name, value in source.state.items()
                     if name not in CLASS_HEAD and (name not in target or target[name].shape != value.shape)]
    rows = _class_rows(class_names, source, class_map)
    head = [name for name in CLASS_HEAD if name in target]
    if len(head) == len(CLASS_HEAD) and all(name in source.state for name in head):
        copied = {name: target[name].clone() for name in head}
        for target_row, (class_name, source_class, source_row) in enumerate(rows):
            if source_row is None:
                report.fresh_classes.append(class_name)
                continue
            for name in head:
                copied[name][target_row] = source.state[name][source_row].to(copied[name].dtype)
            report.class_rows[class_name] = source_class
        if not report.fresh_classes:
            report.loaded.extend(head)
        updates.update(copied)
    else:
        report.reinitialized.extend(head)
        report.fresh_classes = list(class_names)
    if strict and (report.reinitialized or report.unused or report.fresh_classes):
        raise WeightsError(f"{source.description} does not fit the model exactly (init_strict): " + _strict_problems(report))
    with torch.no_grad():
        model.load_state_dict({**target, **updates}, strict=True)
    return report


def _class_rows(
    class_names: Sequence[str], source: SourceModel, class_map: Mapping[str, str]
) -> list[tuple[str, str | None, int | None]]:
    """(training class, source class, source row) per training class; None where nothing matches.

    A source with unnamed classes gives its rows by position when the class counts agree.
    """
    rows = source.state.get(CLASS_HEAD[0])
    if source.class_names is None:
        same_count = rows is not None and len(rows) == len(class_names)
        return [(name, f"#{i}" if same_count else None, i if same_count else None) for i, name in enumerate(class_names)]
    by_name = {name.casefold(): (name, i) for i, name in enumerate(source.class_names)}
    result = []
    for name in class_names:
        wanted = class_map.get(name, name).casefold()
        source_name, row = by_name.get(wanted, (None, None))
        result.append((name, source_name, row))
    return result


def _check_class_map(class_map: Mapping[str, str], class_names: Sequence[str], source_names: list[str] | None) -> None:
    unknown = [key for key in class_map if key not in class_names]
    if unknown:
        raise WeightsError(f"model.class_map: {', '.join(map(repr, unknown))} not among the training classes "
                           f"({', '.join(class_names)})")
    if source_names is None:
        if class_map:
            raise WeightsError("model.class_map: the init_from source has no class names to map onto")
        return
    known = {name.casefold() for name in source_names}
    missing = [value for value in class_map.values() if value.casefold() not in known]
    if missing:
        raise WeightsError(f"model.class_map: {', '.join(map(repr, missing))} not among the init_from model's classes")


def _strict_problems(report: TransferReport) -> str:
    problems = []
    for label, names in (("re-initialized", report.reinitialized), ("unused", report.unused),
                         ("classes without a source row", report.fresh_classes)):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    return "; ".join(problems)


def initialize_from(model: nn.Module, recipe: Recipe) -> TransferReport:
    """Apply ``recipe.model.init_from`` to ``model`` (built from ``recipe``)."""
    spec = recipe.model
    source = read_source(spec.init_from, recipe)
    names = spec.class_names or tuple(c["name"] for c in default_categories(spec.num_classes))
    return transfer(model, source, names, spec.class_map, spec.init_strict)
