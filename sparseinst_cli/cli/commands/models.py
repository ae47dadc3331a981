"""``sparseinst models``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ...files import output_file, write_json
from ...weights.zoo import (
    DEFAULT_MODEL,
    MODELS,
    ZooModel,
    available_model,
    converted_path,
    download_path,
    find_model,
    is_cached,
    zoo_home,
)
from ..console import console


def models(
    context: typer.Context,
    name: Annotated[Optional[str], typer.Argument(  # noqa: UP007
        help="A model to show in full: its source, licence, notes and cache files.", show_default=False)] = None,
    json_path: Annotated[
        Optional[Path],  # noqa: UP007
        typer.Option("--json", help="Also write every field of every model (URLs, licence, notes) to this JSON file."),
    ] = None,
) -> None:
    """List the authors' published COCO models that --weights NAME accepts.

    Anywhere a checkpoint is taken, --weights NAME downloads the authors' file once, converts it
    into a native checkpoint that predicts at the published input size, and caches it; later
    runs use the cache with no network. The cache is SPARSEINST_HOME (default: the per-user cache
    folder); its downloads/ folder may be deleted once a model is converted. Set
    SPARSEINST_MIRROR to a folder or a base URL holding NAME.pth to fetch from there first (for
    machines without Google Drive access).

    Examples:
      sparseinst models
      sparseinst models r50_giam_aug
      sparseinst predict photo.jpg --weights r50_giam_aug
      SPARSEINST_MIRROR=/shared/sparseinst sparseinst eval --weights r50vd_dcn_giam_aug
      sparseinst models --json models.json
    """
    if json_path is not None:
        output_file(json_path, (".json",), setting="json_path")
    if name is not None:
        console.print(model_card(name))
        return
    console.print(models_table())
    console.print(f"cache: {zoo_home()}; default model: {DEFAULT_MODEL}; a model's source: sparseinst models NAME")
    if json_path is not None:
        rows = [{**asdict(m), "available": m.available, "cached": is_cached(m.name),
                 "cached_path": str(converted_path(m.name))} for m in MODELS]
        write_json(json_path, {"home": str(zoo_home()), "default_model": DEFAULT_MODEL, "models": rows})
        console.print(f"wrote {json_path}")


def models_table() -> Table:
    """One row per catalogue entry: what it is, what it scored, whether it is ready offline."""
    table = Table(title="SparseInst models published by the authors (COCO, 80 classes)")
    for column in ("name", "recipe", "backbone", "input", "aug", "AP val", "AP test-dev", "licence", "cached"):
        table.add_column(column, justify="right" if column in ("input", "AP val", "AP test-dev") else "left")
    for model in MODELS:
        table.add_row(model.name, _recipe_cell(model), model.backbone, str(model.input_size),
                      "yes" if model.augmented else "no", f"{model.ap_val:.1f}",
                      "-" if model.ap_test_dev is None else f"{model.ap_test_dev:.1f}", model.licence,
                      "yes" if is_cached(model.name) else "no")
    return table


def model_card(name: str) -> Table:
    """Every field of one catalogue entry, its source and its files in the cache."""
    model = find_model(name)
    if model is None:
        available_model(name)  # raises the one-line error with the closest name
    table = Table(title=f"{model.name}: SparseInst {model.backbone}, COCO", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "recipe": _recipe_cell(model),
        "input (shorter side)": str(model.input_size),
        "trained with the crop augmentation": "yes" if model.augmented else "no",
        "AP, COCO val2017": f"{model.ap_val:.1f}",
        "AP, COCO test-dev": "-" if model.ap_test_dev is None else f"{model.ap_test_dev:.1f}",
        "FPS, RTX 2080 Ti (authors)": "-" if model.fps_2080ti is None else f"{model.fps_2080ti:.1f}",
        "source": model.url,
        "licence": f"{model.licence} (the licence of the authors' repository)",
        "downloaded file": f"{download_path(model.name)}{'' if download_path(model.name).is_file() else ' (not yet)'}",
        "converted model": f"{converted_path(model.name)}{'' if is_cached(model.name) else ' (not yet)'}",
        "notes": model.notes or "-",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def _recipe_cell(model: ZooModel) -> str:
    if model.recipe is not None:
        return model.recipe
    return "[dim]not available here (backbone not implemented)[/]"
