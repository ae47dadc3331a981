"""Loops that run a predictor over many images: files named by the user (overlays as PNG, COCO
results and a summary as JSON) and the images of a COCO dataset."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.coco import coco_results
from ..data.datasets import CocoInstances
from ..data.images import read_image, write_image
from ..errors import ImageError
from ..files import output_folder, write_json
from ..progress import SILENT, Progress
from .drawing import SHOW_THRESHOLD, draw_instances
from .predictor import Predictor

DATASET_BATCH_SIZE = 4  # images per forward pass over a dataset
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"


@dataclass
class ImageReport:
    image_id: int
    file_name: str
    height: int = 0
    width: int = 0
    instances: int = 0
    shown: int = 0
    milliseconds: float = 0.0
    overlay: str | None = None
    error: str | None = None


@dataclass
class PredictReport:
    images: list[ImageReport] = field(default_factory=list)
    results_path: Path | None = None
    summary_path: Path | None = None

    @property
    def failures(self) -> list[ImageReport]:
        return [r for r in self.images if r.error]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    show_threshold: float = SHOW_THRESHOLD,
    overlays: bool = True,
    progress: Progress = SILENT,
) -> PredictReport:
    """Predict each image; a missing or corrupt image is recorded, reported and skipped."""
    output_folder(out_dir)
    progress.start("predict", len(paths))
    report = PredictReport()
    results: list[dict] = []
    used_names: set[str] = set()
    for image_id, path in enumerate(paths, start=1):
        entry = ImageReport(image_id, str(path))
        try:
            image = read_image(path)
            start = time.perf_counter()
            instances = predictor([image])[0].to("cpu")
            entry.milliseconds = (time.perf_counter() - start) * 1000
        except ImageError as exc:
            entry.error = str(exc)
        except (ValueError, RuntimeError) as exc:  # an image the network cannot take: the others go on
            entry.error = f"{path}: cannot be predicted ({str(exc).splitlines()[0]})"
        else:
            entry.height, entry.width = image.shape[:2]
            entry.instances = len(instances)
            entry.shown = int((instances.scores >= show_threshold).sum())
            results.extend(coco_results(instances, image_id, predictor.categories))
            if overlays:
                name = _unique_name(path.stem, used_names)
                write_image(out_dir / name, draw_instances(image, instances, predictor.class_names, show_threshold))
                entry.overlay = name
        report.images.append(entry)
        if entry.error:
            progress.note(f"failed: {entry.error}")
        progress.advance()
    progress.stop()
    report.results_path = out_dir / RESULTS_FILE
    write_json(report.results_path, results, indent=None)
    report.summary_path = out_dir / SUMMARY_FILE
    write_json(report.summary_path, {
        "categories": predictor.categories,
        "show_threshold": show_threshold,
        "images": [asdict(r) for r in report.images],
        "failed": len(report.failures),
    })
    return report


def _unique_name(stem: str, used: set[str]) -> str:
    name, counter = f"{stem}.png", 1
    while name in used:
        counter += 1
        name = f"{stem}_{counter}.png"
    used.add(name)
    return name


def predict_dataset(
    predictor: Predictor,
    dataset: CocoInstances,
    batch_size: int = DATASET_BATCH_SIZE,
    progress: Progress = SILENT,
    task: str = "predict",
) -> tuple[list[dict], list[int], list[str]]:
    """COCO results for every readable image; returns (results, image ids predicted, failures)."""
    results, image_ids, failures = [], [], []
    progress.start(task, len(dataset))
    for batch in _batches(dataset, batch_size, failures, progress):
        ids, images = zip(*batch)
        for image_id, instances in zip(ids, predictor.predict(list(images))):
            results.extend(coco_results(instances, image_id, predictor.categories))
        image_ids.extend(ids)
        progress.advance(len(batch))
    progress.stop()
    return results, image_ids, failures


def _batches(dataset: CocoInstances, size: int, failures: list[str],
             progress: Progress) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch = []
    for index in range(len(dataset)):
        try:
            sample = dataset.load(index)
        except ImageError as exc:
            failures.append(str(exc))
            progress.note(f"skipped: {exc}")
            progress.advance()
            continue
        batch.append((sample.image_id, sample.image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
