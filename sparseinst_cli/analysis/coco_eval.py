"""COCO mask AP (SPEC 4): run a predictor over a dataset, or score an existing results file.

pycocotools is the reference. The summary numbers are read from ``COCOeval.eval["precision"]``
rather than from ``summarize()``, which hard-codes 100 detections per image, so that
``max_detections`` can be raised for datasets with crowded images. faster-coco-eval (a C++
reimplementation with the same matching rules, installed with ``pip install
sparseinst[fast-eval]``) gives the same precision array faster; ``auto`` uses it when installed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components.postprocess import (
    MAX_DETECTIONS,  # COCO scores at most this many predictions per image
)

from ..data.datasets import (
    CocoInstances,
    is_finite_number,
    is_integer,
    segmentation_problem,
)
from ..defaults import DATASET_BATCH_SIZE, CocoBackend
from ..deploy.backends import ModelSource
from ..errors import Notice, ResultsError, SparseInstError
from ..files import read_json, write_json
from ..inference.batches import RESULTS_FILE, predict_dataset
from ..inference.predictor import Predictor
from ..progress import SILENT, Progress

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MAX_NOTICES = 10  # ground-truth problems listed one by one; more are counted
EVAL_FILE = "eval.json"
IOU_50, IOU_75 = 0, 5  # indices of 0.50 and 0.75 in COCOeval's ten IoU thresholds (0.50:0.05:0.95)
AREA_ALL, AREA_SMALL, AREA_MEDIUM, AREA_LARGE = 0, 1, 2, 3
RESULT_KEYS = ("image_id", "category_id", "segmentation", "score")


def resolve_coco_backend(backend: str | CocoBackend) -> CocoBackend:
    backend = CocoBackend(backend)
    installed = find_spec("faster_coco_eval") is not None
    if backend == CocoBackend.auto:
        return CocoBackend.faster if installed else CocoBackend.pycocotools
    if backend == CocoBackend.faster and not installed:
        raise SparseInstError("faster-coco-eval is not installed (pip install 'sparseinst[fast-eval]')",
                              setting="coco_backend")
    return backend


@dataclass
class Evaluation:
    """Metrics in percent (None where COCO leaves them undefined) and what to tell the user."""

    metrics: dict[str, Any]
    results: list[dict]
    image_ids: list[int]
    failures: list[str] = field(default_factory=list)  # unreadable images, one message each
    warnings: list[Notice] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.metrics, "images": len(self.image_ids), "detections": len(self.results),
                "failures": self.failures, "warnings": [str(w) for w in self.warnings]}

    def save(self, out_dir: Path, *, with_results: bool = True) -> list[Path]:
        """Write ``eval.json`` (the metrics) and, with ``with_results``, ``results.json`` (the
        predictions) into ``out_dir``; returns the paths written."""
        written = [write_json(out_dir / EVAL_FILE, self.to_json())]
        if with_results:
            written.append(write_json(out_dir / RESULTS_FILE, self.results, indent=None))
        return written


def ground_truth_index(dataset: CocoInstances) -> COCO:
    """pycocotools' index of what the dataset reader accepted (as training reads the file: bad
    annotations skipped, NaN or negative areas and boxes recomputed, crowd regions kept)."""
    coco = COCO()
    coco.dataset = dataset.ground_truth()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        coco.createIndex()
    return coco


def load_ground_truth(annotations: str | Path) -> COCO:
    """``ground_truth_index`` of an annotations file (its images are not needed)."""
    return ground_truth_index(CocoInstances(annotations))


def reader_notices(dataset: CocoInstances) -> list[Notice]:
    """What the reader skipped or repaired in the ground truth, at most ``MAX_NOTICES`` lines."""
    problems = dataset.summary.problems()
    notices = [Notice(f"ground truth {dataset.annotations_file}: {p}") for p in problems[:MAX_NOTICES]]
    if len(problems) > MAX_NOTICES:
        notices.append(Notice(f"ground truth {dataset.annotations_file}: ... and {len(problems) - MAX_NOTICES} more"))
    return notices


def load_results(path: str | Path, ground_truth: COCO) -> list[dict]:
    """A COCO results file, checked against the ground truth it will be scored on."""
    path = Path(path)
    results = read_json(path, "results file", ResultsError)
    if not isinstance(results, list):
        raise ResultsError(f"{path}: a COCO results file is a JSON list of predictions")
    check_results(results, ground_truth, str(path))
    return results


def check_results(results: list[Any], ground_truth: COCO, source: str = "results") -> None:
    """Raise ``ResultsError`` for the first prediction that cannot be scored: a missing field, an
    image or category the ground truth lacks, a score that is not a finite number, or a mask that
    is not a valid RLE of its image's size."""
    for position, record in enumerate(results):
        where = f"{source}: prediction #{position}"
        if not isinstance(record, dict) or any(key not in record for key in RESULT_KEYS):
            raise ResultsError(f"{where} needs {', '.join(RESULT_KEYS)}")
        image_id, category_id, score = record["image_id"], record["category_id"], record["score"]
        if not is_integer(image_id) or image_id not in ground_truth.imgs:
            raise ResultsError(f"{where} is for image id {image_id!r}, which the ground truth does not have")
        if not is_integer(category_id) or category_id not in ground_truth.cats:
            raise ResultsError(f"{where} has category id {category_id!r}, which the ground truth does not have")
        if not is_finite_number(score):
            raise ResultsError(f"{where}: score must be a finite number, not {score!r}")
        segm = record["segmentation"]
        image = ground_truth.imgs[image_id]
        problem = (segmentation_problem(segm, image["height"], image["width"]) if isinstance(segm, dict)
                   else "segmentation must be RLE (size, counts)")
        if problem:
            raise ResultsError(f"{where} (image {image_id}): {problem}")


def crowding_warnings(ground_truth: COCO, results: list[dict], image_ids: Sequence[int],
                      max_detections: int = MAX_DETECTIONS) -> list[Notice]:
    """Say when images hold more instances or predictions than are scored per image."""
    warnings = []
    selected = set(image_ids)
    crowded_gt = [i for i in selected if len(ground_truth.getAnnIds(imgIds=[i], iscrowd=False)) > max_detections]
    per_image: dict[int, int] = {}
    for record in results:
        per_image[record["image_id"]] = per_image.get(record["image_id"], 0) + 1
    crowded_pred = [i for i, n in per_image.items() if n > max_detections and i in selected]
    if crowded_gt:
        warnings.append(Notice(f"{len(crowded_gt)} image(s) have more than {max_detections} annotated instances; "
                               f"COCO scores at most {max_detections} predictions per image, so recall there is "
                               f"capped (raise max_detections)", setting="max_detections"))
    if crowded_pred:
        warnings.append(Notice(f"{len(crowded_pred)} image(s) have more than {max_detections} predictions; only "
                               f"the {max_detections} highest-scoring of each are scored"))
    if not results:
        warnings.append(Notice("there are no predictions: every AP is 0"))
    return warnings


def mask_ap(annotations: str | Path | COCO, results: list[dict], image_ids: Sequence[int] | None = None,
            max_detections: int = MAX_DETECTIONS, backend: str | CocoBackend = CocoBackend.auto,
            class_agnostic: bool = False) -> dict[str, Any]:
    """COCO segm metrics in percent: AP, AP50, AP75, APs, APm, APl and ``per_class`` AP.

    ``image_ids`` (default: every image of the ground truth) are the images scored; an image
    without predictions counts as all misses. Empty ``results`` give AP 0. ``backend``:
    pycocotools, faster-coco-eval (the same numbers), or auto. ``class_agnostic`` ignores the
    labels (COCOeval's ``useCats = 0``): a mask matches any object it covers, so the gap to the
    class-aware figures is what the class head costs; ``per_class`` is then empty.
    """
    ground_truth = annotations if isinstance(annotations, COCO) else load_ground_truth(annotations)
    image_ids = sorted(image_ids if image_ids is not None else ground_truth.getImgIds())
    evaluator = _evaluated(ground_truth, results, image_ids, max_detections, resolve_coco_backend(backend),
                           use_categories=not class_agnostic)
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
    at = {
        "AP": precision[:, :, :, AREA_ALL, -1],
        "AP50": precision[IOU_50, :, :, AREA_ALL, -1],
        "AP75": precision[IOU_75, :, :, AREA_ALL, -1],
        "APs": precision[:, :, :, AREA_SMALL, -1],
        "APm": precision[:, :, :, AREA_MEDIUM, -1],
        "APl": precision[:, :, :, AREA_LARGE, -1],
    }
    metrics: dict[str, Any] = {key: _mean_percent(at[key]) for key in SUMMARY_KEYS}
    metrics["per_class"] = {} if class_agnostic else {
        ground_truth.cats[category_id]["name"]: _mean_percent(precision[:, :, k, AREA_ALL, -1])
        for k, category_id in enumerate(evaluator.params.catIds)
    }
    return metrics


def _evaluated(ground_truth: COCO, results: list[dict], image_ids: list[int], max_detections: int,
               backend: CocoBackend, use_categories: bool = True):
    """The accumulated COCOeval (pycocotools', or faster-coco-eval's: the same interface)."""
    if backend == CocoBackend.faster:
        from faster_coco_eval import COCO as index_class
        from faster_coco_eval import COCOeval_faster as evaluator_class
    else:
        index_class, evaluator_class = COCO, COCOeval
    with contextlib.redirect_stdout(io.StringIO()):  # both print as they go
        truth = ground_truth
        if index_class is not COCO:
            truth = index_class()
            truth.dataset = ground_truth.dataset
            truth.createIndex()
        if results:
            detections = truth.loadRes([dict(r) for r in results])  # loadRes adds keys to each record
        else:
            detections = index_class()
            detections.dataset = {"images": ground_truth.dataset["images"], "annotations": [], "categories": []}
            detections.createIndex()
        evaluator = evaluator_class(truth, detections, iouType="segm")
        evaluator.params.imgIds = image_ids
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.params.useCats = int(use_categories)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_percent(values: np.ndarray) -> float | None:
    """Mean of COCOeval's precision entries in percent; None where all are undefined (-1)."""
    valid = values[values > -1]
    return round(100 * float(valid.mean()), 3) if valid.size else None


def evaluate_model(predictor: Predictor, dataset: CocoInstances, batch_size: int = DATASET_BATCH_SIZE,
                   progress: Progress = SILENT, coco_backend: str | CocoBackend = CocoBackend.auto) -> Evaluation:
    """Run ``predictor`` over ``dataset`` and score its predictions against the dataset's JSON."""
    ground_truth = ground_truth_index(dataset)
    scored = max(predictor.recipe.inference.max_detections, MAX_DETECTIONS)  # per image
    results, image_ids, failures = predict_dataset(predictor, dataset, batch_size, progress, task="eval")
    metrics = mask_ap(ground_truth, results, image_ids, scored, coco_backend)
    warnings = crowding_warnings(ground_truth, results, image_ids, scored)
    return Evaluation(metrics, results, image_ids, failures, warnings)


def evaluate_dataset(model: ModelSource, annotations: Path, images: Path, batch_size: int = DATASET_BATCH_SIZE,
                     progress: Progress = SILENT, coco_backend: str | CocoBackend = CocoBackend.auto) -> Evaluation:
    """Open ``model`` with the dataset's category ids and evaluate it on the dataset; the
    dataset's annotation problems are noted on ``progress``."""
    dataset = CocoInstances(annotations, images)
    for problem in dataset.summary.problems():
        progress.note(problem)
    return evaluate_model(model.open(dataset.categories, progress), dataset, batch_size, progress, coco_backend)


def evaluate_results(annotations: str | Path, results: str | Path | list[dict],
                     max_detections: int = MAX_DETECTIONS,
                     coco_backend: str | CocoBackend = CocoBackend.auto) -> Evaluation:
    """Score an existing results file (or list) on every image of the annotations file."""
    dataset = CocoInstances(annotations)
    ground_truth = ground_truth_index(dataset)
    if isinstance(results, list):
        check_results(results, ground_truth)
    else:
        results = load_results(results, ground_truth)
    image_ids = ground_truth.getImgIds()
    metrics = mask_ap(ground_truth, results, image_ids, max_detections, coco_backend)
    warnings = reader_notices(dataset) + crowding_warnings(ground_truth, results, image_ids, max_detections)
    return Evaluation(metrics, results, image_ids, [], warnings)
