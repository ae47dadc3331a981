"""Loops that run a predictor over many images: files named by the user (overlays as PNG, COCO
results, a COCO instances file and a summary as JSON) and the images of a COCO dataset."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.coco import coco_results
from ..data.datasets import CocoInstances
from ..data.images import read_image, read_skipping, write_image
from ..defaults import DATASET_BATCH_SIZE
from ..errors import ImageError
from ..files import output_folder, refuse_overwriting, write_json
from ..progress import SILENT, Progress
from .predictor import Predictor
from .tiling import DEFAULT_OVERLAP, check_tiling, predict_tiled

RESULTS_FILE = "results.json"  # COCO results: a list of instances, as COCO evaluation reads
INSTANCES_FILE = "instances.json"  # a COCO instances file (images, categories, annotations): pre-annotations
SUMMARY_FILE = "summary.json"


@dataclass
class ImageReport:
    image_id: int
    file_name: str
    height: int = 0
    width: int = 0
    instances: int = 0
    milliseconds: float = 0.0
    overlay: str | None = None
    error: str | None = None


@dataclass
class PredictReport:
    conf: float
    images: list[ImageReport] = field(default_factory=list)
    results_path: Path | None = None
    instances_path: Path | None = None
    summary_path: Path | None = None

    @property
    def failures(self) -> list[ImageReport]:
        return [r for r in self.images if r.error]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    conf: float | None = None,
    overlays: bool = True,
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    progress: Progress = SILENT,
) -> PredictReport:
    """Predict each image, keeping the instances scoring at least ``conf`` (default: the model's
    ``inference.conf``), and write into ``out_dir``: an overlay per image, ``results.json`` (COCO
    results, each naming its image file and class), ``instances.json`` (a COCO instances file with the
    images' file names and sizes, for a labeling tool to import) and ``summary.json``. An output
    that would replace one of the images is refused before anything is written; a missing or
    corrupt image is recorded, reported and skipped. With ``tile``, each image is predicted on
    overlapping ``tile`` x ``tile`` tiles sharing ``overlap`` of a tile, plus whole
    (``tiling.predict_tiled``); its results are at its original size all the same."""
    conf = predictor.recipe.inference.conf if conf is None else conf
    if tile is not None:
        check_tiling(tile, overlap)
    output_folder(out_dir)
    overlay_names = unique_names([Path(p).stem for p in paths], ".png")
    report = PredictReport(conf, results_path=out_dir / RESULTS_FILE, instances_path=out_dir / INSTANCES_FILE,
                           summary_path=out_dir / SUMMARY_FILE)
    planned = [report.results_path, report.instances_path, report.summary_path]
    refuse_overwriting([*planned, *(out_dir / name for name in overlay_names if overlays)], paths)
    file_names = relative_names(paths)
    progress.start("predict", len(paths))
    results: list[dict] = []
    for image_id, (path, file_name, overlay) in enumerate(zip(paths, file_names, overlay_names), start=1):
        entry = ImageReport(image_id, file_name)
        try:
            image = read_image(path)
            start = time.perf_counter()
            if tile is None:
                prediction = predictor([image], conf=conf)[0].to("cpu")
            else:
                prediction = predict_tiled(predictor, image, tile=tile, overlap=overlap, conf=conf)
            entry.milliseconds = (time.perf_counter() - start) * 1000
        except ImageError as exc:
            entry.error = str(exc)
        except (ValueError, RuntimeError) as exc:  # an image the network cannot take: the others go on
            entry.error = f"{path}: cannot be predicted ({str(exc).splitlines()[0]})"
        else:
            entry.height, entry.width = image.shape[:2]
            entry.instances = len(prediction)
            results.extend({**record, "category_name": name, "file_name": file_name}
                           for record, name in zip(prediction.to_coco(image_id), prediction.names))
            if overlays:
                write_image(out_dir / overlay, prediction.plot())
                entry.overlay = overlay
        report.images.append(entry)
        if entry.error:
            progress.note(f"failed: {entry.error}")
        progress.advance()
    progress.stop()
    write_json(report.results_path, results, indent=None)
    write_json(report.instances_path, coco_instances(report, results, predictor.categories), indent=None)
    write_json(report.summary_path, {
        "categories": predictor.categories,
        "conf": conf,
        "tile": tile,
        "overlap": overlap if tile is not None else None,
        "images": [asdict(r) for r in report.images],
        "failed": len(report.failures),
    })
    return report


def coco_instances(report: PredictReport, results: list[dict], categories: list[dict]) -> dict:
    """A COCO instances file of the predicted images: ``images`` (id, file_name, height, width),
    ``categories`` and ``annotations`` (the results with ids; each keeps its score)."""
    annotations = [{key: value for key, value in record.items() if key not in ("file_name", "category_name")}
                   | {"id": number} for number, record in enumerate(results, start=1)]
    images = [{"id": r.image_id, "file_name": r.file_name, "height": r.height, "width": r.width}
              for r in report.images if not r.error]
    return {"info": {"description": "sparseinst predictions", "conf": report.conf}, "images": images,
            "categories": [{"id": c["id"], "name": c["name"], "supercategory": ""} for c in categories],
            "annotations": annotations}


def relative_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the folder the paths share (their file names when they share their
    folder), with forward slashes, as a COCO ``file_name``."""
    if not paths:
        return []
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    root = os.path.commonpath(folders)
    return [Path(os.path.relpath(os.path.abspath(p), root)).as_posix() for p in paths]


def unique_names(stems: Sequence[str], suffix: str) -> list[str]:
    """``STEM{suffix}`` for each stem, numbered (``STEM_2``...) where stems repeat."""
    names, used = [], set()
    for stem in stems:
        name, counter = f"{stem}{suffix}", 1
        while name in used:
            counter += 1
            name = f"{stem}_{counter}{suffix}"
        used.add(name)
        names.append(name)
    return names


def predict_dataset(
    predictor: Predictor,
    dataset: CocoInstances,
    batch_size: int = DATASET_BATCH_SIZE,
    progress: Progress = SILENT,
    task: str = "predict",
) -> tuple[list[dict], list[int], list[str]]:
    """COCO results of every candidate (whatever the model's ``conf``: COCO AP ranks them all) for
    every readable image; returns (results, image ids predicted, failures)."""
    results, image_ids, failures = [], [], []
    progress.start(task, len(dataset))
    for batch in _batches(dataset, batch_size, failures, progress):
        ids, images = zip(*batch)
        for image_id, instances in zip(ids, predictor.predict(list(images), conf=0.0)):
            results.extend(coco_results(instances, image_id, predictor.categories))
        image_ids.extend(ids)
        progress.advance(len(batch))
    progress.stop()
    return results, image_ids, failures


def _batches(dataset: CocoInstances, size: int, failures: list[str],
             progress: Progress) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch = []
    for _, sample in read_skipping(range(len(dataset)), dataset.load, failures, progress):
        batch.append((sample.image_id, sample.image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
