"""The recipes and sample images that ship with the package.

In a wheel (or a zip) they are package data, ``sparseinst_cli/recipes`` and
``sparseinst_cli/samples``, read through ``importlib.resources``; in a source checkout or an
editable install they are the repository's own ``recipes/`` and ``samples/`` folders.
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

RECIPE_SUFFIX = ".toml"
SAMPLE_SUFFIXES = (".png", ".jpg")
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the repository, when running from one
_EXTRACTED = ExitStack()  # sample files taken out of a zipped package
atexit.register(_EXTRACTED.close)


def _folder(kind: str) -> Traversable:
    packaged = files(__package__) / kind
    return packaged if packaged.is_dir() else SOURCE_ROOT / kind


def builtin_recipe_names() -> list[str]:
    """Names of the shipped recipes, ``ablations/...`` included."""
    names: list[str] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(RECIPE_SUFFIX):
                names.append(prefix + entry.name.removesuffix(RECIPE_SUFFIX))

    walk(_folder("recipes"), "")
    return sorted(names)


def builtin_recipe(name: str) -> Traversable | None:
    """The shipped recipe called ``name`` (with or without ``.toml``), or None."""
    entry = _folder("recipes")
    *folders, stem = name.removesuffix(RECIPE_SUFFIX).split("/")
    for folder in folders:
        entry = entry / folder
    entry = entry / (stem + RECIPE_SUFFIX)
    return entry if entry.is_file() else None


def sample_images() -> list[Path]:
    """The shipped sample images as files, by name (extracted for the life of the process when
    the package is zipped)."""
    entries = sorted((e for e in _folder("samples").iterdir() if e.name.endswith(SAMPLE_SUFFIXES)),
                     key=lambda e: e.name)
    return [_EXTRACTED.enter_context(as_file(entry)) for entry in entries]
