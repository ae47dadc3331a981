"""Registries of model components, one per family, filled by a decorator and built by name.

A component is any callable returning an ``nn.Module`` (usually the class itself) whose
keyword arguments are typed. Its recipe parameters are read from that signature, so the
signature is the single source of defaults and the recipe schema validates every component,
third-party ones included, before anything is built.

The built-in components register when their modules are imported, which the first lookup does
(``BUILTIN_MODULES``). Third-party components come from the entry-point group
``sparseinst.components``; an entry named ``FAMILY.NAME`` points at the callable, e.g.
``backbone.tiny_net = my_pkg.nets:TinyNet``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model, model_validator
from pydantic_core import PydanticCustomError

from .errors import ComponentError

FAMILIES = ("backbone", "encoder", "iam", "decoder", "matcher", "loss")
ENTRY_POINT_GROUP = "sparseinst.components"
BUILTIN_MODULES = tuple(f"{__package__}.{name}" for name in
                        ("backbones", "efficientnet", "encoders", "iam", "decoder", "matcher", "losses"))

# Arguments that follow from other components, so that the model builder passes them, not the
# recipe: the one list of them. ``wired_arguments`` picks them out of the values the builder has,
# the schema leaves them out of the recipe, and ``Registry.build`` passes them through unvalidated.
# The IAM's come from the decoder, which calls its IAM factory with them.
WIRED_ARGUMENTS: dict[str, frozenset[str]] = {
    "backbone": frozenset(),
    "encoder": frozenset({"in_channels"}),
    "iam": frozenset({"in_channels", "num_instances"}),
    "decoder": frozenset({"in_channels", "num_classes", "iam"}),
    "matcher": frozenset(),
    "loss": frozenset({"num_classes"}),
}


def wired_arguments(family: str, known: Mapping[str, Any]) -> dict[str, Any]:
    """The wired arguments of ``family`` (``WIRED_ARGUMENTS``), taken from ``known``, the values
    the builder has at that point (``in_channels``, ``num_classes``...)."""
    missing = WIRED_ARGUMENTS[family] - known.keys()
    if missing:
        raise ComponentError(f"{family}: no value to pass for {', '.join(sorted(missing))}")
    return {key: known[key] for key in sorted(WIRED_ARGUMENTS[family])}


class UnknownComponentError(ComponentError):
    def __init__(self, family: str, name: str, known: list[str]) -> None:
        self.family, self.name, self.known = family, name, known
        super().__init__(unknown_name_message(family, name, known))


def unknown_name_message(family: str, name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    return f"unknown {family} '{name}'{suggestion}; known: {', '.join(known) or 'none'}"


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys, suggesting the closest known one, and
    infinite or NaN numbers (``lr = inf`` would train nothing, silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    hint = difflib.get_close_matches(str(key), known, n=1)
                    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{suggestion}; known: {known}",
                        {"key": key, "suggestion": suggestion, "known": ", ".join(known)},
                    )
        return data


class ComponentParams(StrictModel):
    """Recipe parameters of one component; ``name`` selects the component."""

    name: str

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments for the component's constructor."""
        return {key: getattr(self, key) for key in type(self).model_fields if key != "name"}


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: Any  # ``inspect.Parameter.empty`` when required


class Registry:
    """Components of one family, by name."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._factories: dict[str, Callable[..., Any]] = {}
        self._params_models: dict[str, type[ComponentParams]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``factory`` as ``name``; duplicate names are refused."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, factory)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., Any]) -> None:
        if name in self._factories:
            raise ComponentError(f"{self.family} '{name}' is already registered")
        self._params_models[name] = _params_model(self.family, name, factory)
        self._factories[name] = factory

    def names(self) -> list[str]:
        load_builtins()
        load_plugins()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        load_builtins()
        load_plugins()
        if name not in self._factories:
            raise UnknownComponentError(self.family, name, self.names())
        return self._factories[name]

    def params_model(self, name: str) -> type[ComponentParams]:
        self.get(name)
        return self._params_models[name]

    def params(self, name: str) -> list[ParamInfo]:
        fields = self.params_model(name).model_fields
        return [
            ParamInfo(key, _describe_type(info.annotation, info.metadata), _default_of(info))
            for key, info in fields.items()
            if key != "name"
        ]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Validate the recipe parameters in ``kwargs``, then call the factory.

        Wired arguments (see ``WIRED_ARGUMENTS``) pass through unvalidated.
        """
        factory = self.get(name)
        wired = {key: kwargs.pop(key) for key in list(kwargs) if key in WIRED_ARGUMENTS[self.family]}
        params = self.params_model(name).model_validate({"name": name, **kwargs})
        return factory(**wired, **params.arguments())


REGISTRIES: dict[str, Registry] = {family: Registry(family) for family in FAMILIES}


def registry(family: str) -> Registry:
    if family not in REGISTRIES:
        raise UnknownComponentError("component family", family, list(FAMILIES))
    return REGISTRIES[family]


def register(family: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@register("backbone", "resnet50")`` on a class or factory function."""
    return registry(family).register(name)


def build(family: str, name: str, **kwargs: Any) -> Any:
    """Build the component ``name`` of ``family``; unknown names list the known ones."""
    return registry(family).build(name, **kwargs)


def iter_components() -> Iterator[tuple[str, str, list[ParamInfo]]]:
    for family in FAMILIES:
        for name in REGISTRIES[family].names():
            yield family, name, REGISTRIES[family].params(name)


_builtins_loaded = False


def load_builtins() -> None:
    """Import the built-in component modules once (each registers its components)."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: the modules' own lookups must not import them again
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


_plugins_loaded = False


def load_plugins(entry_points: Callable[..., Any] | None = None, *, force: bool = False) -> list[str]:
    """Register components advertised under ``sparseinst.components``; returns their names.

    A plugin that fails to import or register is reported by name with a warning and skipped.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return []
    _plugins_loaded = True
    found = (entry_points or metadata.entry_points)(group=ENTRY_POINT_GROUP)
    loaded = []
    for entry in found:
        try:
            family, _, name = entry.name.partition(".")
            if not name:
                raise ComponentError("entry-point name must be FAMILY.NAME")
            registry(family).add(name, entry.load())
            loaded.append(entry.name)
        except Exception as exc:  # noqa: BLE001 - any broken plugin is skipped, not fatal
            warnings.warn(f"skipping component plugin '{entry.name}': {exc}", stacklevel=2)
    return loaded


def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(factory, eval_str=True)


def _params_model(family: str, name: str, factory: Callable[..., Any]) -> type[ComponentParams]:
    fields: dict[str, Any] = {"name": (Literal[name], name)}
    for param in _signature(factory).parameters.values():
        if param.name in WIRED_ARGUMENTS[family] or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.annotation is param.empty:
            raise ComponentError(f"{family} '{name}': parameter '{param.name}' needs a type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (param.annotation, default)
    model_name = f"{family.capitalize()}_{name}"
    return create_model(model_name, __base__=ComponentParams, **fields)


def _default_of(info: Any) -> Any:
    return inspect.Parameter.empty if info.is_required() else info.default


def _describe_type(annotation: Any, metadata: list[Any]) -> str:
    """``int > 0``, ``int in [0, 5]``, ``tuple[Literal[2, 3, 4, 5], ...]``..."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = text.replace("typing.", "").replace("NoneType", "None")
    bounds = {kind: getattr(item, kind) for item in metadata for kind in ("gt", "ge", "lt", "le") if hasattr(item, kind)}
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " ".join([text, *(f"{symbols[k]} {v}" for k, v in bounds.items())])
