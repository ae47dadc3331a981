"""The model zoo: the authors' published COCO checkpoints by name, downloaded once, converted
into native checkpoints and cached, so that ``--weights r50_giam_aug`` works like a file.

The catalogue is the "Models" section of the authors' README (github.com/hustvl/SparseInst),
one ``ZooModel`` per row, in its order. Files live under ``zoo_home()``: the authors' ``.pth``
in ``downloads/``, the converted ``.safetensors`` in ``models/``. They come from the mirror named
by ``SPARSEINST_MIRROR`` (a folder or a base URL) when it has them, else from Google Drive.
Importing this module is cheap: conversion (and torch) is imported only to convert.
"""

from __future__ import annotations

import difflib
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..errors import WeightsError
from ..progress import SILENT, Progress
from .download import DownloadError, copy_file, download

HOME_VARIABLE = "SPARSEINST_HOME"
MIRROR_VARIABLE = "SPARSEINST_MIRROR"
DEFAULT_MODEL = "r50_giam_aug"  # the README's own example: R-50 G-IAM, no DCN (slow on a CPU)
CHECKPOINT_SUFFIX = ".pth"
DRIVE_PAGE = "https://drive.google.com/file/d/{file_id}/view?usp=sharing"
DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
DRIVE_WEB_PAGE = "Google Drive answered with a web page, not the file (quota or sign-in)"
MAX_REASON = 160  # characters of a conversion error quoted (torch's unpickling errors run to paragraphs)


@dataclass(frozen=True)
class ZooModel:
    """One row of the authors' model table. ``recipe`` is the built-in recipe of the same
    architecture, None where this project does not implement the backbone; ``input_size`` is the
    shorter side the published AP was measured at; None marks what the README leaves out ("-")
    or what is not known (``sha256``, ``size``)."""

    name: str
    recipe: str | None
    backbone: str
    input_size: int
    augmented: bool
    ap_val: float
    ap_test_dev: float | None
    fps_2080ti: float | None
    url: str
    file_id: str
    licence: str = "MIT"
    sha256: str | None = None
    size: int | None = None
    notes: str = ""

    @property
    def available(self) -> bool:
        """Whether this project can build the model, and so download and convert it."""
        return self.recipe is not None


def _row(name: str, recipe: str | None, backbone: str, input_size: int, augmented: bool, ap_val: float,
         ap_test_dev: float | None, fps_2080ti: float | None, file_id: str, notes: str = "") -> ZooModel:
    return ZooModel(name, recipe, backbone, input_size, augmented, ap_val, ap_test_dev, fps_2080ti,
                    DRIVE_PAGE.format(file_id=file_id), file_id, notes=notes)


MODELS: tuple[ZooModel, ...] = (
    # name, recipe, backbone, input, aug, AP val, AP test-dev, FPS (2080 Ti), Drive id
    _row("r50_base", "r50_base", "R-50", 640, False, 32.8, 33.2, 44.3, "12RQLHD5EZKIOvlqW3avUCeYjFG1NPKDy"),
    _row("r50vd_base", "r50vd_base", "R-50-vd", 640, False, 34.1, 34.5, 42.6, "1fjPFy35X2iJu3tYwVdAq4Bel82PfH5kx"),
    _row("r50_giam", "r50_giam", "R-50", 608, False, 33.4, 34.0, 44.6, "1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL"),
    _row("r50_giam_soft", "r50_giam_softmax", "R-50", 608, False, 33.6, None, 44.6,
         "1doterrG89SjmLxDyU8IhLYRGxVH69sR2"),
    _row("r50_giam_aug", "r50_giam_aug", "R-50", 608, True, 34.2, 34.7, 44.6, "1MK8rO3qtA7vN9KVSBdp0VvZHCNq8-bvz"),
    _row("r50_dcn_giam_aug", "r50_dcn_giam_aug", "R-50-DCN", 608, True, 36.4, 36.8, 41.6,
         "1qxdLRRHbIWEwRYn-NPPeCCk6fhBjc946"),
    _row("r50vd_giam_aug", "r50vd_giam_aug", "R-50-vd", 608, True, 35.6, 36.1, 42.8,
         "1dlamg7ych_BdWpPUCuiBXbwE0SXpsfGx"),
    _row("r50vd_dcn_giam_aug", "r50vd_dcn_giam_aug", "R-50-vd-DCN", 608, True, 37.4, 37.9, 40.0,
         "1clYPdCNrDNZLbmlAEJ7wjsrOLn1igOpT",
         "the same file gives 37.7 AP val and 38.1 AP test-dev (39.3 FPS) at input 640"),
    _row("cspdarknet53_giam", None, "CSPDarkNet", 640, False, 35.1, None, None, "1rcUJWUbusM216Zbtmo_xB774jdjb3qSt",
         "the README gives no aug column for this row"),
    _row("r101_giam", "r101_giam", "R-101", 640, False, 34.9, 35.5, None, "1EZZck-UNfom652iyDhdaGYbxS0MrO__z"),
    _row("r101_dcn_giam", "r101_dcn_giam", "R-101-DCN", 640, False, 36.4, 36.9, None,
         "1shkFvyBmDlWRxl1ActD6VfZJTJYBGBjv"),
    _row("pvt_b1_giam", None, "PVTv2-B1", 640, False, 35.3, 36.0, 33.5, "13l9JgTz3sF6j3vSVHOOhAYJnCf-QuNe_",
         "48.9 FPS on an RTX 3090"),
    _row("pvt_b2_li_giam", None, "PVTv2-B2-li", 640, False, 37.2, 38.2, 26.5, "1DFxQnFg_UL6kmMoNC4StUKo79RXVHyNF"),
)


def zoo_home() -> Path:
    """The cache folder: ``$SPARSEINST_HOME``, else the platform's per-user cache folder."""
    home = os.environ.get(HOME_VARIABLE, "").strip()
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("sparseinst"))


def download_path(name: str) -> Path:
    """Where the authors' checkpoint of ``name`` is kept."""
    return zoo_home() / "downloads" / f"{name}{CHECKPOINT_SUFFIX}"


def converted_path(name: str) -> Path:
    """Where the native checkpoint of ``name`` is kept."""
    return zoo_home() / "models" / f"{name}.safetensors"


def is_cached(name: str) -> bool:
    """Whether ``name`` is converted and ready, with no download needed."""
    return converted_path(name).is_file()


def find_model(name: str) -> ZooModel | None:
    """The catalogue entry called ``name``, or None."""
    return next((model for model in MODELS if model.name == name), None)


def is_model_name(text: str | Path) -> bool:
    """``text`` names a zoo model; a path with a suffix, or an existing file, never does."""
    path = Path(text)
    return not path.suffix and not path.exists() and find_model(str(text)) is not None


def authors_url(model: ZooModel) -> str:
    """The direct download of the authors' file (Drive's usercontent URL, past its warning page)."""
    return DRIVE_DOWNLOAD.format(file_id=model.file_id)


def resolve_weights(source: str | Path, progress: Progress = SILENT) -> Path:
    """A checkpoint argument as a file: a path comes back unchanged (a missing file is for the
    reader to report), a zoo name as its cached native checkpoint (downloaded and converted on
    first use); anything else is refused with the closest name."""
    path = Path(source)
    if path.suffix or path.exists():
        return path
    if is_model_name(source):
        return pretrained(str(source), progress)
    raise WeightsError(f"'{source}': no such file, and not a model name ({_names_hint(str(source))})",
                       setting="weights")


def available_model(name: str) -> ZooModel:
    """The catalogue entry of ``name``, refused in one line if unknown or not buildable here."""
    model = find_model(name)
    if model is None:
        raise WeightsError(f"'{name}': not a model name ({_names_hint(name)})", setting="weights")
    if not model.available:
        raise WeightsError(f"{name}: its {model.backbone} backbone is not implemented in this project, so it is "
                           "listed but cannot be downloaded or used (sparseinst models marks the ones that can)",
                           setting="weights")
    return model


def pretrained(name: str, progress: Progress = SILENT) -> Path:
    """The native checkpoint of zoo model ``name``: from the cache (no network), else downloaded,
    converted for its recipe at the published input size, and cached.

    A download that conversion refuses is deleted, so that the next call fetches it again.
    """
    model = available_model(name)
    converted = converted_path(name)
    if converted.is_file():
        return converted
    checkpoint = fetch_checkpoint(model, progress)
    from ..recipe import load_recipe
    from .conversion import convert_checkpoint

    recipe = load_recipe(model.recipe, [f"input.min_size_test={model.input_size}"])
    progress.note(f"converting {name} into {converted}")
    try:
        convert_checkpoint(checkpoint, converted, recipe)
    except WeightsError as exc:
        checkpoint.unlink(missing_ok=True)
        reason = " ".join(str(exc).removeprefix(f"{checkpoint}: ").split())
        reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."
        raise WeightsError(f"{checkpoint}: not a usable {name} checkpoint, so it was removed and the next try "
                           f"downloads it again: {reason}") from None
    return converted


def fetch_checkpoint(model: ZooModel, progress: Progress = SILENT) -> Path:
    """The authors' file of ``model`` in the cache: already there, or copied from the mirror, or
    downloaded (the mirror first, then the authors' URL). Raises one ``WeightsError`` line naming
    every source tried and how to place the file by hand."""
    dest = download_path(model.name)
    if dest.is_file():
        return dest
    checks = dict(expected_size=model.size, sha256=model.sha256, progress=progress, task=f"downloading {model.name}")
    failures = []
    for source in (*_mirror_sources(model.name), authors_url(model)):
        try:
            if isinstance(source, Path):
                if not source.is_file():
                    failures.append(f"{source}: not in the mirror folder")
                    continue
                return copy_file(source, dest, **checks)
            progress.note(f"downloading {model.name} from {source}")
            return download(source, dest, **checks)
        except DownloadError as exc:
            reason = DRIVE_WEB_PAGE if exc.kind == "web_page" and _is_google(source) else exc.reason
            failures.append(f"{exc.url}: {reason}")
        except OSError as exc:
            failures.append(f"{source}: {exc.strerror or exc}")
    raise WeightsError(f"could not download {model.name} ({'; '.join(failures)}); download it by hand from "
                       f"{model.url} and save it as {dest}, or set {MIRROR_VARIABLE} to a folder holding "
                       f"{model.name}{CHECKPOINT_SUFFIX}")


def _names_hint(text: str) -> str:
    close = difflib.get_close_matches(text, [m.name for m in MODELS], n=1)
    return "sparseinst models lists them" + (f"; did you mean '{close[0]}'?" if close else "")


def _mirror_sources(name: str) -> list[str | Path]:
    """The mirror's copy of ``name``: a file in a folder (a path or ``file://`` URL) or a URL."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    file_name = f"{name}{CHECKPOINT_SUFFIX}"
    if not mirror:
        return []
    if mirror.startswith(("http://", "https://")):
        return [f"{mirror.rstrip('/')}/{urllib.parse.quote(file_name)}"]
    if mirror.startswith("file://"):
        return [Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)) / file_name]
    return [Path(mirror).expanduser() / file_name]


def _is_google(url: str | Path) -> bool:
    host = urllib.parse.urlparse(str(url)).hostname or ""
    return host == "google.com" or host.endswith(".google.com")
