"""``sparseinst data check``, ``convert``, ``split`` and ``ceiling``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import CEILING_SIZES, SourceFormat
from ...files import output_file, write_json
from ...recipe import MAX_SIZE_TEST, MIN_SIZE_TEST, SIZE_DIVISIBILITY
from ..console import console, err_console
from ..exit_codes import EXIT_FAILED
from ..options import ExistOkOption, Overrides, RecipeOption, out_option, run_folder
from ..progress import ProgressBar
from ..tables import ceiling_table, dataset_tables

CHECK_FILE, FIGURE_FILE, CEILING_FILE = "check.json", "dataset.png", "ceiling.json"


def check(
    context: typer.Context,
    annotations: Annotated[Path, typer.Argument(help="COCO instances JSON.")],
    images: Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
        "--images", help="Its image folder (each file is read as training reads it).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Read only the image files' headers, not their pixels.")] = False,
    out: Annotated[Optional[Path], out_option("data-check", f"{CHECK_FILE} and {FIGURE_FILE}")] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
) -> None:
    """Read a dataset exactly as training does: a summary (images, instances per class, image and
    instance sizes, images without instances, crowd regions) and every problem by kind. Exit 0
    when clean, 1 when it found problems.

    Examples:
      sparseinst data check data/coco/annotations/instances_val2017.json --images data/coco/val2017
      sparseinst data check labels.json --images photos/ --quick
    """
    from ...analysis.dataset_figure import save_dataset_figure
    from ...data.check import check_dataset

    out = run_folder(out, "data-check", exist_ok)
    with ProgressBar() as progress:
        report = check_dataset(annotations, images, decode=not quick, progress=progress)
    for table in dataset_tables(report):
        console.print(table)
    path = write_json(out / CHECK_FILE, report.to_json())
    figure = save_dataset_figure(report, out / FIGURE_FILE)
    console.print(f"report: {path}; figure: {figure}")
    if report.problems:
        console.print(f"{len(report.problems)} problem(s) found")
        raise typer.Exit(EXIT_FAILED)
    console.print("no problems found")


def split(
    context: typer.Context,
    annotations: Annotated[Path, typer.Argument(help="COCO instances JSON to split by image.")],
    val: Annotated[float, typer.Option("--val", help="Share of the images for validation (0-1).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Same file, share and seed: the same split.")] = 0,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--out", "-o", help="Folder for STEM_train.json and STEM_val.json \\[default: beside the input].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing split files.")] = False,
) -> None:
    """Split a COCO file into train and val by image, deterministically; annotations follow
    their image.

    Examples:
      sparseinst data split labels.json --val 0.2 --seed 0
    """
    from ...data.split import split_dataset

    result = split_dataset(annotations, val, seed, out=out, overwrite=overwrite)
    console.print(f"train: {result.train} ({result.train_images} images, {result.train_instances} instances); "
                  f"val: {result.val} ({result.val_images} images, {result.val_instances} instances)")


def convert(
    context: typer.Context,
    source: Annotated[Path, typer.Argument(help="The labels: a YOLO labels folder, a LabelMe folder or a folder of "
                                                 "instance-mask PNGs.")],
    source_format: Annotated[SourceFormat, typer.Option("--from", help="The labels' format.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The COCO instances JSON to write.")],
    images: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--images", help="The image folder (yolo and masks: required; labelme: default SOURCE).")] = None,
    names: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--names", help="yolo: the data YAML or a names file (one class per line).")] = None,
    class_name: Annotated[str, typer.Option("--class-name", help="masks: the class of every object.")] = "object",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Convert YOLO segmentation labels, LabelMe JSON or instance-mask PNGs into a COCO
    instances JSON (multi-part objects and, from masks, holes kept).

    Examples:
      sparseinst data convert labels/train --from yolo --images images/train --names data.yaml --out train.json
      sparseinst data convert annotated/ --from labelme --out labels.json
      sparseinst data convert PennFudanPed/PedMasks --from masks --images PennFudanPed/PNGImages --class-name person --out pennfudan.json
    """
    from ...data.convert import convert_dataset

    output_file(out, (".json",), inputs=[source])
    result = convert_dataset(source_format, source, out, images=images, names=names, class_name=class_name,
                             overwrite=overwrite)
    for line in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {line}")
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {result.out}: {result.images} images, {result.instances} instances, "
                  f"{len(result.categories)} classes ({', '.join(result.categories[:10])}"
                  f"{', ...' if len(result.categories) > 10 else ''})")


def _inference_sizes(values: list[str] | None) -> list[str] | None:
    for value in values or ():
        parts = value.split(":")
        if len(parts) > 2 or not all(part.isascii() and part.isdecimal() and int(part) > 0 for part in parts):
            raise typer.BadParameter(f"{value!r}: give SHORT or SHORT:LONGEST in pixels, e.g. 640 or 640:853")
    return values


def ceiling(
    context: typer.Context,
    annotations: Annotated[Path, typer.Argument(help="COCO instances JSON (its images are not needed).")],
    size: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--size", callback=_inference_sizes, metavar="SHORT[:LONGEST]",
        help=f"Inference size: the shorter side and the longest (default: SHORT x {MAX_SIZE_TEST}/{MIN_SIZE_TEST}, "
             f"the ratio of the recipes' pairs such as 384:512 and 640:853) (repeatable) "
             f"\\[default: {', '.join(CEILING_SIZES)}; with --recipe, its test size].")] = None,
    size_divisibility: Annotated[Optional[int], typer.Option(  # noqa: UP007
        min=1, show_default=False,
        help=f"Padding multiple of the input \\[default: the recipe's, else {SIZE_DIVISIBILITY}].")] = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
    out: Annotated[Optional[Path], out_option("data-ceiling", CEILING_FILE)] = None,  # noqa: UP007
    exist_ok: ExistOkOption = False,
) -> None:
    """The mask AP a model could reach on this data at each inference size, were it perfect: the
    ceiling set by the masks' output grid (small objects lose most). Pick an input size that
    leaves your objects within reach before training for days. The grid is the authors' stride 8
    unless --recipe names a recipe whose decoder draws its masks at stride 4
    (model.decoder.mask_stride); the recipe also gives the padding, the mask threshold, the masks
    scored per image (inference.max_detections, at least 100) and, without --size, the size.

    Examples:
      sparseinst data ceiling labels.json
      sparseinst data ceiling data/coco/annotations/instances_val2017.json --size 512 --size 640:853 --size 800:1333
      sparseinst data ceiling labels.json --recipe finetune_small_objects
      sparseinst data ceiling labels.json --recipe finetune_lite --set model.decoder.mask_stride=4 --size 384
    """
    from ...analysis.mask_ceiling import mask_ceiling, recipe_settings

    sizes = [_size_pair(value) for value in size] if size else None
    settings = {}
    divisibility = size_divisibility or SIZE_DIVISIBILITY
    if recipe is not None:
        from ...recipe import load_recipe

        resolved = load_recipe(recipe, overrides or [])
        settings = recipe_settings(resolved)
        divisibility = size_divisibility or resolved.input.size_divisibility
        sizes = sizes or [(resolved.input.min_size_test, resolved.input.max_size_test)]
    elif overrides:
        raise typer.BadParameter("--set changes a recipe: give the recipe with --recipe", param_hint="'--set'")
    sizes = sizes or [_size_pair(value) for value in CEILING_SIZES]
    out = run_folder(out, "data-ceiling", exist_ok)
    with ProgressBar() as progress:
        report = mask_ceiling(annotations, sizes, divisibility, progress=progress, **settings)
    console.print(ceiling_table(report))
    if recipe is not None:
        console.print(f"mask grid: stride {report.mask_stride} (recipe {recipe})")
    console.print(f"report: {write_json(out / CEILING_FILE, report.to_json())}")


def _size_pair(value: str) -> tuple[int, int]:
    short, _, longest = value.partition(":")
    return int(short), int(longest) if longest else round(int(short) * MAX_SIZE_TEST / MIN_SIZE_TEST)
