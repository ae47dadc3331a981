"""Options shared by several commands (light imports only: every command's help and usage errors
come before torch loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import CONF, Backend, Precision
from ..files import new_run_folder

RUNS = Path("runs")  # where commands write unless told otherwise: RUNS / "predict", RUNS / RECIPE, ...

Overrides = Annotated[
    Optional[list[str]],  # noqa: UP007 - typer needs Optional here
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. model.iam.groups=8 (repeatable)."),
]
RecipeOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--recipe", "-r", help="Recipe file or built-in name (see 'sparseinst recipes')."),
]
WeightsOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--weights", "-w", metavar="FILE|NAME",
                 help="A checkpoint (.safetensors from train or convert, or .onnx), or a model name from "
                      "'sparseinst models' (downloaded, converted and cached on first use)."),
]
ConfOption = Annotated[Optional[float], typer.Option(  # noqa: UP007
    "--conf", min=0, max=1, show_default=False,
    help=f"Keep instances scoring at least this \\[default: the model's inference.conf, {CONF}].")]
ExistOkOption = Annotated[bool, typer.Option(
    "--exist-ok", help="Write into the default output folder even if it exists (instead of a new numbered one).")]
DeviceOption = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda or cuda:N.")]
FastOption = Annotated[bool, typer.Option(
    "--fast/--plain", help="The fast path (batch norm folded into the convolutions, NHWC, Winograd): the plain "
                           "model's instances to float tolerance; --plain runs the model as trained.")]
DtypeOption = Annotated[Precision, typer.Option(
    "--dtype", help="fp32, fp16/bf16 autocast for the network, or auto: bf16 where the hardware has it "
                    "natively, else fp32 (not fp32: implies --fast).")]
BackendOption = Annotated[Backend, typer.Option(
    "--backend", help="torch; onnxruntime (an .onnx file) or openvino (CPU; an .xml or .onnx file), either of them "
                      "exporting a checkpoint on the fly; or auto: the fastest of those installed that gives torch's "
                      "instances on this CPU (measured on first use, then cached).")]
DataOption = Annotated[Path, typer.Option("--data", help="COCO instances JSON (the ground truth).", show_default=False)]
ImagesOption = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    "--images", help="Image folder of --data (needed to run a model).")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]


def out_option(command: str, what: str) -> object:
    """The ``--out`` option of a command that writes a folder of results: by default a new
    numbered folder under ``runs/`` (``runs/predict``, ``runs/predict2``, ...)."""
    return typer.Option("--out", "-o", show_default=False,
                        help=f"Folder for {what} \\[default: a new {RUNS / command}, {RUNS / command}2, ...].")


_NEW_RUN_FOLDERS: list[Path] = []  # the folders this command created, for release_empty_run_folders


def run_folder(out: Path | None, command: str, exist_ok: bool) -> Path:
    """``out`` as given (created), or a new numbered folder under ``runs/`` named after ``command``
    (with ``exist_ok``: ``runs/COMMAND`` itself, existing or not)."""
    target = out if out is not None else RUNS / command
    existed = target.is_dir() and (out is not None or exist_ok)
    if not target.parent.is_dir():
        _NEW_RUN_FOLDERS.append(target.parent)
    folder = new_run_folder(target, exist_ok=True) if out is not None else new_run_folder(target, exist_ok)
    if not existed:
        _NEW_RUN_FOLDERS.append(folder)
    return folder


def release_empty_run_folders(failed: bool) -> None:
    """After a command: if it ``failed``, remove the folders it created that are still empty (it
    stopped before writing), so that a failed command leaves no trace."""
    while _NEW_RUN_FOLDERS:
        folder = _NEW_RUN_FOLDERS.pop()
        if not failed:
            continue
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            pass


def former_option(name: str, replacement: str, **checks: object) -> object:
    """A hidden option kept under its former ``name`` for one release (``console.renamed`` warns
    when it is used); ``checks`` are typer's (``min``, ``max``)."""
    return typer.Option(name, hidden=True, show_default=False, help=f"Former name of {replacement}.", **checks)
