"""COCO mask AP of a predictor on a COCO-format dataset (pycocotools, RLE-encoded results)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .coco import coco_results
from .datasets import CocoInstances
from .images import ImageError
from .inference import Predictor

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6], in this order
EVAL_BATCH_SIZE = 4


def predict_dataset(
    predictor: Predictor,
    dataset: CocoInstances,
    batch_size: int = EVAL_BATCH_SIZE,
    advance: Callable[[int], None] | None = None,
) -> tuple[list[dict], list[int], list[str]]:
    """COCO results for every readable image; returns (results, evaluated image ids, failures)."""
    results, image_ids, failures = [], [], []
    for batch in _batches(dataset, batch_size, failures):
        ids, images = zip(*batch)
        for image_id, instances in zip(ids, predictor.predict(list(images))):
            results.extend(coco_results(instances, image_id, predictor.categories))
        image_ids.extend(ids)
        if advance is not None:
            advance(len(batch))
    return results, image_ids, failures


def _batches(dataset: CocoInstances, size: int, failures: list[str]) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch = []
    for index in range(len(dataset)):
        try:
            sample = dataset.load(index)
        except ImageError as exc:
            failures.append(str(exc))
            continue
        batch.append((sample.image_id, sample.image))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def mask_ap(annotations: str | Path, results: list[dict], image_ids: Sequence[int]) -> dict:
    """COCO segm metrics in percent: AP, AP50, AP75, APs, APm, APl and per-class AP."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        ground_truth = COCO(str(annotations))
        detections = ground_truth.loadRes(results) if results else COCO()
        if not results:
            detections.dataset = {"images": ground_truth.dataset["images"], "annotations": [], "categories": []}
            detections.createIndex()
        evaluator = COCOeval(ground_truth, detections, iouType="segm")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {key: _percent(value) for key, value in zip(SUMMARY_KEYS, evaluator.stats[:6])}
    metrics["per_class"] = _per_class_ap(evaluator, ground_truth)
    return metrics


def _percent(value: float) -> float | None:
    return None if value < 0 else round(100 * float(value), 3)  # COCOeval gives -1 where undefined


def _per_class_ap(evaluator: COCOeval, ground_truth: COCO) -> dict[str, float | None]:
    precision = evaluator.eval["precision"]  # (iou thresholds, recall, classes, areas, max dets)
    per_class = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        name = ground_truth.cats[category_id]["name"]
        per_class[name] = round(100 * float(values.mean()), 3) if values.size else None
    return per_class


def evaluate(predictor: Predictor, dataset: CocoInstances, batch_size: int = EVAL_BATCH_SIZE,
             advance: Callable[[int], None] | None = None) -> dict:
    """Predict on ``dataset`` and score the masks; ``failures`` lists unreadable images."""
    results, image_ids, failures = predict_dataset(predictor, dataset, batch_size, advance)
    metrics = mask_ap(dataset.annotations_file, results, image_ids)
    metrics.update(images=len(image_ids), detections=len(results), failures=failures)
    return metrics
