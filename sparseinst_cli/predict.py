"""Predicting over image files: overlays as PNG, COCO results JSON and a summary JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .coco import coco_results
from .images import ImageError, read_image, write_image
from .inference import Predictor
from .visualize import draw_instances

SHOW_THRESHOLD = 0.3  # overlays draw instances scoring at least this; the JSON keeps all


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
    on_image: Callable[[ImageReport], None] | None = None,
) -> PredictReport:
    """Predict each image; a missing or corrupt image is recorded and skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
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
        if on_image is not None:
            on_image(entry)
    report.results_path = out_dir / "results.json"
    report.results_path.write_text(json.dumps(results))
    report.summary_path = out_dir / "summary.json"
    report.summary_path.write_text(json.dumps({
        "categories": predictor.categories,
        "show_threshold": show_threshold,
        "images": [asdict(r) for r in report.images],
        "failed": len(report.failures),
    }, indent=2))
    return report


def _unique_name(stem: str, used: set[str]) -> str:
    name, counter = f"{stem}.png", 1
    while name in used:
        counter += 1
        name = f"{stem}_{counter}.png"
    used.add(name)
    return name
