"""Reading weights in other layouts: ImageNet ResNets (torchvision, timm) and the authors'
SparseInst checkpoints, mapped onto this project's parameter names.

Nothing here unpickles arbitrary objects: ``.pth`` files load with ``weights_only=True``,
``.pkl`` files (detectron2) with an unpickler that admits only NumPy arrays and plain containers.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .errors import WeightsError

Rule = tuple[str, str | Callable[[re.Match[str]], str]]
Layout = Literal["official", "imagenet"]


def _stage(match: re.Match[str]) -> str:
    return f"res{int(match[1]) + 1}.{match[2]}."


# Ordered rules; each key is rewritten by every rule that matches it.
RESNET_BLOCK_RULES: list[Rule] = [
    (r"^layer(\d)\.(\d+)\.", _stage),
    (r"^(res\d\.\d+)\.bn(\d)\.", r"\1.conv\2.norm."),
]
TORCHVISION_RESNET_RULES: list[Rule] = [
    (r"^conv1\.weight$", "stem.conv1.weight"),
    (r"^bn1\.", "stem.conv1.norm."),
    *RESNET_BLOCK_RULES,
    (r"^(res\d\.\d+)\.downsample\.0\.", r"\1.shortcut."),
    (r"^(res\d\.\d+)\.downsample\.1\.", r"\1.shortcut.norm."),
]
# timm's ResNet-D ("resnet50d", and the authors' R-50-vd): deep stem, pooled shortcuts.
TIMM_RESNET_D_RULES: list[Rule] = [
    (r"^conv1\.0\.", "stem.conv1."),
    (r"^conv1\.1\.", "stem.conv1.norm."),
    (r"^conv1\.3\.", "stem.conv2."),
    (r"^conv1\.4\.", "stem.conv2.norm."),
    (r"^conv1\.6\.", "stem.conv3."),
    (r"^bn1\.", "stem.conv3.norm."),
    *RESNET_BLOCK_RULES,
    (r"^(res\d\.\d+)\.downsample\.1\.", r"\1.shortcut."),
    (r"^(res\d\.\d+)\.downsample\.2\.", r"\1.shortcut.norm."),
]
# The authors' encoder already matches; their decoder nests what this project keeps flat.
OFFICIAL_DECODER_RULES: list[Rule] = [
    (r"^decoder\.inst_branch\.inst_convs\.", "decoder.inst_convs."),
    (r"^decoder\.inst_branch\.iam_conv\.", "decoder.iam.conv."),
    (r"^decoder\.inst_branch\.fc\.", "decoder.iam.group_fc."),
    (r"^decoder\.inst_branch\.softmax_bias$", "decoder.iam.softmax_bias"),
    (r"^decoder\.inst_branch\.(cls_score|mask_kernel|objectness)\.", r"decoder.\1."),
    (r"^decoder\.mask_branch\.mask_convs\.", "decoder.mask_convs."),
    (r"^decoder\.mask_branch\.projection\.", "decoder.mask_projection."),
]
IGNORED_KEYS = re.compile(r"(^fc\.|^head\.|num_batches_tracked$)")  # ImageNet classifier, BN counters


def rename(state: Mapping[str, Tensor], rules: list[Rule]) -> dict[str, Tensor]:
    renamed = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        if new in renamed:
            raise WeightsError(f"two keys map onto '{new}' (the second is '{key}')")
        renamed[new] = value
    return renamed


def resnet_rules(state: Mapping[str, Tensor]) -> list[Rule]:
    """The rules for an ImageNet ResNet state dict, by its layout."""
    if "conv1.0.weight" in state:
        return TIMM_RESNET_D_RULES
    if "conv1.weight" in state:
        return TORCHVISION_RESNET_RULES
    if "stem.conv1.weight" in state:
        return []  # already this project's layout
    raise WeightsError("not an ImageNet ResNet state dict (no 'conv1' or 'stem.conv1' weights)")


def imagenet_resnet_to_native(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision or timm ResNet weights -> this project's backbone layout (classifier dropped)."""
    kept = {k: v for k, v in state.items() if not IGNORED_KEYS.search(k)}
    return rename(kept, resnet_rules(kept))


def official_to_native(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' SparseInst state dict -> this project's layout."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    rest = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    converted = {f"backbone.{k}": v for k, v in rename(backbone, resnet_rules(backbone)).items()}
    converted.update(rename(rest, OFFICIAL_DECODER_RULES))
    return converted


class _ArraysOnlyUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise WeightsError(f"refusing to unpickle {module}.{name}: only arrays are allowed in a .pkl checkpoint")
        return super().find_class(module, name)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from ``.safetensors``, ``.pth``/``.pt`` (torch) or ``.pkl`` (detectron2) files.

    A dict holding a ``"model"`` or ``"state_dict"`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: is a folder, not a file" if path.is_dir() else f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        if path.suffix == ".pkl":
            with path.open("rb") as handle:
                data = _ArraysOnlyUnpickler(handle, encoding="latin1").load()
        else:
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - torch raises many types; each means one of three things
                raise _unreadable_torch_file(path, exc) from None
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read is the same user error
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    tensors = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, Tensor):
            tensors[str(key)] = value
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors")
    return tensors


def _unreadable_torch_file(path: Path, exc: Exception) -> WeightsError:
    """What ``torch.load(weights_only=True)``'s failure means, in one line (its own message
    suggests ``weights_only=False``, which would run whatever code the file holds)."""
    text = str(exc)
    refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if refused:
        return WeightsError(f"{path}: holds Python objects besides tensors ({refused.group(1)}), which are never "
                            f"unpickled here because that could run code; save its state dict alone")
    if "zip archive" in text:
        return WeightsError(f"{path}: a truncated or corrupt PyTorch checkpoint (its zip archive is incomplete)")
    return WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle of tensors)")


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str = "weights") -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key fails, listed."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(f"{source} do not fit the model: " + "; ".join(problems))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights (torchvision, timm or native layout) into a ResNet backbone."""
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    load_strict(backbone, imagenet_resnet_to_native(state), f"backbone weights {path}")


def is_native_state(keys: set[str] | list[str]) -> bool:
    """A SparseInst state dict in this project's layout (flat decoder names)."""
    keys = set(keys)
    official = any(k.startswith(("decoder.inst_branch.", "decoder.mask_branch.")) for k in keys)
    return not official and any(k.startswith("decoder.") for k in keys)


def detect_layout(keys: set[str] | list[str]) -> Layout:
    keys = set(keys)
    if is_native_state(keys):
        raise WeightsError("already a native SparseInst state dict; nothing to convert")
    if any(k.startswith(("decoder.inst_branch.", "decoder.mask_branch.")) for k in keys):
        return "official"
    if {"conv1.weight", "conv1.0.weight", "stem.conv1.weight"} & keys:
        return "imagenet"
    raise WeightsError(
        "unrecognized layout: expected the authors' SparseInst checkpoint "
        "(backbone./encoder./decoder.inst_branch. keys) or an ImageNet ResNet (conv1, layer1...)"
    )
