"""The package's layers, read from its own import statements: no cycles, each layer imports only
the layers below it, and only the command line uses typer and rich."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparseinst_cli

PACKAGE = Path(sparseinst_cli.__file__).parent
ROOT = PACKAGE.name
# Bottom to top. The package's top-level modules (recipe schema, checkpoints, model builder,
# errors, files, memory, progress, resources) form the first layer.
LAYERS = ("core", "data", "weights", "inference", "deploy", "analysis", "engine", "cli")
CORE_MODULES = {"recipe", "checkpoint", "builder", "defaults", "errors", "files", "memory", "progress", "resources"}
ENTRY_MODULES = {ROOT, f"{ROOT}.__main__"}  # the facade and ``python -m``: above every layer
UI_LIBRARIES = {"typer", "rich", "click"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path | None = None) -> tuple[set[str], set[str]]:
    """(modules of this package it imports, top-level names of other packages it imports) of the
    module ``name``, read from ``path`` (default: the module's own file)."""
    path = path or MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from . import x`` names a submodule when one exists
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            continue
        for target in targets:
            if target == ROOT or target.startswith(f"{ROOT}."):
                while target not in MODULES:  # ``pkg.module.attribute`` -> ``pkg.module``
                    target = target.rsplit(".", 1)[0]
                inside.add(target)
            else:
                outside.add(target.split(".")[0])
    return inside - {name}, outside


def layer_of(name: str) -> str:
    first = name.split(".")[1]
    return "core" if first in CORE_MODULES else first


def test_every_module_belongs_to_a_layer() -> None:
    assert len(MODULES) > 40
    unplaced = [name for name in MODULES if name not in ENTRY_MODULES and layer_of(name) not in LAYERS]
    assert not unplaced, f"modules outside the layers {LAYERS}: {unplaced}"


def upward_imports(name: str, path: Path | None = None) -> list[str]:
    rank = LAYERS.index(layer_of(name))
    inside, _ = imports_of(name, path)
    return sorted(target for target in inside if target in ENTRY_MODULES or LAYERS.index(layer_of(target)) > rank)


@pytest.mark.parametrize("name", sorted(set(MODULES) - ENTRY_MODULES))
def test_layers_import_only_layers_below(name: str) -> None:
    upward = upward_imports(name)
    assert not upward, f"{name} ({layer_of(name)}) imports from layers above it: {upward}"


def test_the_facade_exports_the_library_without_the_command_line() -> None:
    inside, outside = imports_of(ROOT)
    assert not inside and not outside & UI_LIBRARIES  # names are imported lazily, when first used
    sources = set(sparseinst_cli._EXPORTS.values())
    assert all(s == "components" or (s in MODULES and layer_of(s) != "cli") for s in sources), sources
    assert {"Predictor", "Trainer", "train", "load_recipe", "build_model", "SparseInstError"} <= set(sparseinst_cli.__all__)


def test_only_the_command_line_uses_typer_and_rich() -> None:
    offenders = {name: sorted(imports_of(name)[1] & UI_LIBRARIES) for name in MODULES
                 if name not in ENTRY_MODULES and layer_of(name) != "cli"}
    assert not {k: v for k, v in offenders.items() if v}
    cli_users = [name for name in MODULES if imports_of(name)[1] & UI_LIBRARIES]
    assert f"{ROOT}.cli.app" in cli_users  # the check above is not vacuous


def test_components_know_nothing_of_the_toolkit() -> None:
    for path in (PACKAGE.parent / "components").glob("*.py"):
        imported = {n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
        assert not {m.split(".")[0] for m in imported} & {ROOT, *UI_LIBRARIES}, path.name


def test_no_import_cycles() -> None:
    graph = {name: imports_of(name)[0] for name in MODULES}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target] if target in trail else [name, target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_checker_sees_planted_violations(tmp_path: Path) -> None:
    """The import reading itself works: a data module importing the engine, and one importing
    the command line lazily inside a function, are caught."""
    planted = tmp_path / "planted.py"
    planted.write_text("from ..engine.trainer import Trainer\n\ndef f():\n    from ..cli import console\n")
    assert upward_imports(f"{ROOT}.data.planted", planted) == [f"{ROOT}.cli.console", f"{ROOT}.engine.trainer"]
    planted.write_text("from .images import read_image\nfrom ..errors import ImageError\nimport rich\n")
    assert upward_imports(f"{ROOT}.data.planted", planted) == []
    assert imports_of(f"{ROOT}.data.planted", planted)[1] == {"rich"}
