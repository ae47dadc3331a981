"""SparseInst's building blocks, each registered by name in its family.

The names below load when first used, and the registries load the built-in components on their
first lookup (``components.registry.BUILTIN_MODULES``): importing the package, its errors or its
registry stays cheap, so a command line can parse its arguments before torch loads.
"""

from __future__ import annotations

import importlib
from typing import Any

# Light (no torch), and imported now: ``registry`` names both a module and its lookup function,
# and this binds the name to the function.
from .errors import ComponentError, SparseInstError, WeightsError
from .registry import FAMILIES, UnknownComponentError, build, register, registry

_EXPORTS = {  # the rest load torch: imported when first used
    **dict.fromkeys(["SparseInstDecoder", "SparseInstOutput"], "decoder"),
    **dict.fromkeys(["SparseInst"], "model"),
    **dict.fromkeys(["Instances"], "postprocess"),  # the function is components.postprocess.postprocess
}

__all__ = [
    "FAMILIES",
    "ComponentError",
    "Instances",
    "SparseInst",
    "SparseInstDecoder",
    "SparseInstError",
    "SparseInstOutput",
    "UnknownComponentError",
    "WeightsError",
    "build",
    "register",
    "registry",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
