"""How much mask AP an input size leaves within reach: the ceiling set by the output's resolution.

SparseInst draws each mask as logits on the stride-8 grid of F (SPEC 1.1), upsampled twice
(bilinear, in the decoder), then post-processing resizes the probabilities to the padded input
and to the original image and thresholds them (SPEC 1.5). An object a few grid cells wide cannot
come back with a high IoU however well the model is trained, so at a small input size a
dataset of small objects has an AP ceiling well under 100. A decoder with ``mask_stride = 4``
draws the logits on the stride-4 grid instead (no upsampling in the decoder): ``mask_stride``
gives the grid, and ``recipe_mask_stride`` reads it from a recipe.

For every ground-truth object this draws candidate masks that the model's output could give
exactly (logits on the mask grid made from the object's coverage of each cell, through the
same resizes and threshold as inference), keeps the one with the best IoU against the object at
its original size, and scores the whole set with the COCO evaluator, each mask scored by its IoU
(the ranking a perfect model would give). The figures are what a model that reproduced every
object as well as its output grid allows would reach: an estimate of the ceiling from below
(the best logits for an object may do slightly better than the candidates tried).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from components.decoder import MASK_OUTPUT_STRIDE
from components.encoders import FEATURE_STRIDE
from components.mask_resize import reference_resize_and_threshold, resize_and_threshold
from components.postprocess import MASK_THRESHOLD, MAX_DETECTIONS

from ..data.check import LARGE_AREA, SMALL_AREA
from ..data.datasets import CocoInstances
from ..data.images import resized_shape
from ..progress import SILENT, Progress
from ..recipe import Recipe
from .coco_eval import SUMMARY_KEYS, ground_truth_index, mask_ap

# Candidate logits: sharpness * (coverage - offset), every pair tried, the best IoU kept. A low
# offset grows the mask over partly covered cells (thin objects), a high one shrinks it; a sharp
# ramp makes a blocky mask, a gentle one lets the bilinear resizes round its corners.
COVERAGE_OFFSETS = (0.2, 0.3, 0.4, 0.5, 0.6)
LOGIT_SHARPNESS = (4.0, 30.0)
IOU_THRESHOLDS = (0.5, 0.75)
OBJECTS_AT_ONCE = 16  # full-size masks in flight: 16 x 12 M pixels x 4 bytes for a 12 MP photo
SIZE_RANGES = {"small": (0, SMALL_AREA), "medium": (SMALL_AREA, LARGE_AREA), "large": (LARGE_AREA, float("inf"))}
MASK_STRIDES = (8, 4)  # the grids a decoder draws mask logits on (components.decoder.MaskStride)


def recipe_mask_stride(recipe: Recipe) -> int:
    """The stride of the grid ``recipe``'s model draws its mask logits on: its decoder's
    ``mask_stride``, or F's stride (8) for a decoder without one."""
    return int(getattr(recipe.model.decoder, "mask_stride", FEATURE_STRIDE))


def recipe_settings(recipe: Recipe) -> dict[str, Any]:
    """``mask_ceiling``'s keyword arguments for ``recipe``'s model, as ``eval`` scores it: its mask
    grid, its mask threshold and its masks per image (at least COCO's 100)."""
    return {"mask_stride": recipe_mask_stride(recipe), "mask_threshold": recipe.inference.mask_threshold,
            "max_detections": max(recipe.inference.max_detections, MAX_DETECTIONS)}


@dataclass
class CeilingAtSize:
    """The ceiling at one inference size: COCO metrics and the share of objects reached."""

    min_size: int
    max_size: int
    metrics: dict[str, float]  # AP, AP50, AP75, APs, APm, APl in percent
    reached: dict[str, dict[str, float | None]]  # "0.5" -> {"all", "small", ...} -> percent (None: no objects)
    median_iou: float

    def to_json(self) -> dict[str, Any]:
        return {"min_size": self.min_size, "max_size": self.max_size, "metrics": self.metrics,
                "reached": self.reached, "median_iou": self.median_iou}


@dataclass
class MaskCeiling:
    annotations: str
    images: int
    instances: dict[str, int]  # "all", "small", "medium", "large" (crowd regions left out)
    mask_threshold: float
    sizes: list[CeilingAtSize] = field(default_factory=list)
    mask_stride: int = FEATURE_STRIDE  # the grid the mask logits are drawn on

    def to_json(self) -> dict[str, Any]:
        return {"annotations": self.annotations, "images": self.images, "instances": self.instances,
                "feature_stride": FEATURE_STRIDE, "mask_stride": self.mask_stride,
                "mask_threshold": self.mask_threshold, "sizes": [size.to_json() for size in self.sizes]}


def mask_ceiling(annotations: str | Path, sizes: Sequence[tuple[int, int]], size_divisibility: int,
                 mask_threshold: float = MASK_THRESHOLD, progress: Progress = SILENT, *,
                 mask_stride: int = FEATURE_STRIDE, max_detections: int = MAX_DETECTIONS) -> MaskCeiling:
    """The mask AP ceiling of a COCO dataset at each (min_size, max_size) inference size, for
    masks drawn on the stride-``mask_stride`` grid (8: the authors' decoder; 4: ``mask_stride = 4``).
    COCO scores at most ``max_detections`` masks per image (images with more objects than that
    cap the recall, as in evaluation)."""
    _check_mask_stride(mask_stride)
    ground_truth = ground_truth_index(CocoInstances(annotations))
    image_ids = sorted(ground_truth.getImgIds())
    objects = _objects_in_order(ground_truth, image_ids)
    areas = np.array([a["area"] for a in objects], dtype=np.float64)
    report = MaskCeiling(str(annotations), len(image_ids), {"all": len(objects), **{
        name: int(((areas >= low) & (areas < high)).sum()) for name, (low, high) in SIZE_RANGES.items()}},
        mask_threshold, mask_stride=mask_stride)
    progress.start("mask ceiling", len(image_ids))
    results: list[list[dict]] = [[] for _ in sizes]
    ious: list[list[float]] = [[] for _ in sizes]
    for image_id in image_ids:  # each mask decoded once, drawn at every size
        info = ground_truth.imgs[image_id]
        image_objects = _objects_in_order(ground_truth, [image_id])
        for start in range(0, len(image_objects), OBJECTS_AT_ONCE):
            chunk = image_objects[start : start + OBJECTS_AT_ONCE]
            masks = np.stack([ground_truth.annToMask(a) for a in chunk])
            for index, (min_size, max_size) in enumerate(sizes):
                best_masks, best_ious = best_reachable_masks(
                    masks, (info["height"], info["width"]), min_size, max_size, size_divisibility, mask_threshold,
                    mask_stride=mask_stride)
                ious[index].extend(best_ious.tolist())
                for annotation, mask, iou in zip(chunk, best_masks, best_ious):
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                    results[index].append({"image_id": image_id, "category_id": annotation["category_id"],
                                           "segmentation": rle, "score": float(iou)})
        progress.advance()
    for index, (min_size, max_size) in enumerate(sizes):
        report.sizes.append(_ceiling_at_size(ground_truth, image_ids, results[index], np.array(ious[index]), areas,
                                             min_size, max_size, max_detections))
    progress.stop()
    return report


def best_reachable_masks(masks: np.ndarray, original_size: tuple[int, int], min_size: int, max_size: int,
                         size_divisibility: int, mask_threshold: float = MASK_THRESHOLD, *,
                         mask_stride: int = FEATURE_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """For ground-truth masks (K, height, width) of one image, the best mask among the candidates
    the model's output can give for each (K, height, width) bool, and its IoU (K,), with the
    mask logits drawn on the stride-``mask_stride`` grid."""
    _check_mask_stride(mask_stride)
    height, width = original_size
    h, w = resized_shape(height, width, min_size, max_size)
    padded = (-(-h // size_divisibility) * size_divisibility, -(-w // size_divisibility) * size_divisibility)
    # The network's stride-8 map covers the padded input rounded up to whole cells; a stride-4
    # mask grid has twice its cells along each side.
    cells = (-(-padded[0] // FEATURE_STRIDE) * FEATURE_STRIDE, -(-padded[1] // FEATURE_STRIDE) * FEATURE_STRIDE)
    coverage = np.zeros((len(masks), *cells), dtype=np.float32)
    for k, mask in enumerate(masks):
        coverage[k, :h, :w] = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    grid = torch.from_numpy(coverage).unsqueeze(1)
    grid = F.avg_pool2d(grid, mask_stride)  # share of each cell of the mask grid the object covers
    upsample = mask_stride // MASK_OUTPUT_STRIDE  # the decoder's bilinear step to its stride-4 output
    truth = masks.astype(bool)
    best_iou = np.full(len(masks), -1.0)
    best = np.zeros_like(truth)
    for offset in COVERAGE_OFFSETS:
        for sharpness in LOGIT_SHARPNESS:
            logits = sharpness * (grid - offset)
            if upsample > 1:
                logits = F.interpolate(logits, scale_factor=upsample, mode="bilinear", align_corners=False)
            drawn = _masks_at_original_size(logits.sigmoid().squeeze(1), padded, (h, w), original_size,
                                            mask_threshold).numpy()
            iou = _iou(drawn, truth)
            better = iou > best_iou
            best[better], best_iou[better] = drawn[better], iou[better]
    return best, best_iou


def _check_mask_stride(mask_stride: int) -> None:
    if mask_stride not in MASK_STRIDES:
        raise ValueError(f"mask_stride must be one of {', '.join(map(str, MASK_STRIDES))}, got {mask_stride}")


def _masks_at_original_size(probs: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int],
                            original_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Post-processing's masks (K, height, width) bool: the fast kernel where it applies (the same masks)."""
    sizes = (input_size, image_size, original_size, threshold)
    made = resize_and_threshold(probs.contiguous(), *sizes)
    return made[0] if made is not None else reference_resize_and_threshold(probs, *sizes)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    intersection = np.count_nonzero(a & b, axis=(1, 2))
    union = np.count_nonzero(a | b, axis=(1, 2))
    return intersection / np.maximum(union, 1)


def _objects_in_order(ground_truth, image_ids: list[int]) -> list[dict]:
    """The ground truth's objects of these images in image order, crowd regions left out."""
    return [a for i in image_ids for a in ground_truth.imgToAnns[i] if not a.get("iscrowd", 0)]


def _ceiling_at_size(ground_truth, image_ids: list[int], results: list[dict], ious: np.ndarray,
                     areas: np.ndarray, min_size: int, max_size: int, max_detections: int) -> CeilingAtSize:
    metrics = mask_ap(ground_truth, results, image_ids, max_detections)
    reached = {}
    for threshold in IOU_THRESHOLDS:
        hit = ious >= threshold
        reached[str(threshold)] = {"all": _percent(hit)} | {
            name: _percent(hit[(areas >= low) & (areas < high)]) for name, (low, high) in SIZE_RANGES.items()}
    return CeilingAtSize(min_size, max_size, {k: metrics[k] for k in SUMMARY_KEYS}, reached,
                         round(float(np.median(ious)), 4) if len(ious) else 0.0)


def _percent(hits: np.ndarray) -> float | None:
    return round(100.0 * float(hits.mean()), 1) if len(hits) else None
