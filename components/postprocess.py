"""Inference post-processing (SPEC 1.5): scores, maskness rescoring and masks at image size.

Batched and on the device; no NMS. Each image's instances come sorted by score, best first,
without the candidates whose mask is empty. On CPU the masks come from ``mask_resize``'s kernel
(identical masks at memory speed) unless ``fast_masks=False``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .decoder import SparseInstOutput
from .inference_defaults import CANDIDATE_THRESHOLD, MASK_THRESHOLD, MAX_DETECTIONS
from .mask_resize import reference_resize_and_threshold, resize_and_threshold

__all__ = ["CANDIDATE_THRESHOLD", "MASK_THRESHOLD", "MAX_DETECTIONS", "Instances", "postprocess"]
MASKNESS_EPS = 1e-6


@dataclass
class Instances:
    """Predictions for one image at its original size (height, width)."""

    masks: Tensor  # (K, height, width) bool
    scores: Tensor  # (K,)
    labels: Tensor  # (K,) int64, contiguous class index
    boxes: Tensor  # (K, 4) x0, y0, x1, y1 in pixels (x1, y1 exclusive), from the masks
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.numel())

    def select(self, keep: Tensor) -> Instances:
        """The instances ``keep`` picks (a boolean mask or indices), of the same type."""
        return dataclasses.replace(self, masks=self.masks[keep], scores=self.scores[keep], labels=self.labels[keep],
                                   boxes=self.boxes[keep])

    def to(self, device: torch.device | str) -> Instances:
        return dataclasses.replace(self, masks=self.masks.to(device), scores=self.scores.to(device),
                                   labels=self.labels.to(device), boxes=self.boxes.to(device))


def instance_scores(logits: Tensor, objectness: Tensor | None) -> tuple[Tensor, Tensor]:
    """score = max over classes of sqrt(sigmoid(class) * sigmoid(objectness)); returns (score, label).

    Without objectness (the "no rescoring" ablation) the score is the class probability alone.
    """
    if objectness is None:
        return logits.sigmoid().max(dim=-1)
    return (logits.sigmoid() * objectness.sigmoid()).sqrt().max(dim=-1)


def maskness(mask_probs: Tensor, mask_threshold: float = MASK_THRESHOLD) -> Tensor:
    """Mean probability inside each thresholded mask: (..., h, w) -> (...)."""
    binary = (mask_probs > mask_threshold).to(mask_probs.dtype)
    return (mask_probs * binary).sum((-2, -1)) / (binary.sum((-2, -1)) + MASKNESS_EPS)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes (K, 4) around boolean masks (K, H, W); empty masks give zeros."""
    if masks.numel() == 0:
        return masks.new_zeros((masks.shape[0], 4), dtype=torch.float32)
    as_bytes = masks.view(torch.uint8) if masks.dtype == torch.bool else masks.to(torch.uint8)
    rows, cols = as_bytes.amax(dim=2) > 0, as_bytes.amax(dim=1) > 0  # amax: much faster than any() on CPU
    height, width = masks.shape[-2:]
    y0 = rows.int().argmax(dim=1)
    y1 = height - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * rows.any(dim=1, keepdim=True)


def postprocess(
    output: SparseInstOutput,
    input_size: tuple[int, int],
    image_sizes: list[tuple[int, int]],
    original_sizes: list[tuple[int, int]],
    *,
    conf: float = 0.0,
    candidate_threshold: float = CANDIDATE_THRESHOLD,
    mask_threshold: float = MASK_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    objectness_rescoring: bool = True,
    fast_masks: bool = True,
    keep_empty: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> list[Instances]:
    """Turn raw outputs for a padded batch into per-image ``Instances``, sorted by score (best
    first), without empty masks.

    Args:
        output: raw predictions for a batch padded to ``input_size`` (H, W).
        image_sizes: (h, w) of each resized image inside the padded batch.
        original_sizes: (height, width) of each image before resizing.
        conf: keep the instances whose final score reaches it; their masks alone are made, so a
            caller that wants the confident ones skips the rest's upsampling. 0 keeps every
            candidate, as COCO AP needs.
        candidate_threshold: the SPEC's cut on the score before the maskness rescoring.
        objectness_rescoring: multiply in the objectness (SPEC 1.5); off for the Table 7 ablation.
        fast_masks: on CPU, resize and threshold with ``mask_resize``'s kernel (the same masks
            and boxes, bit for bit); False: always the ``F.interpolate`` reference.
        keep_empty: keep the candidates whose mask is empty (a caller that lines the instances
            up with the candidates it passed in).
        on_stage: called with "scores" when scores and labels are final, and with "masks" when
            the masks and boxes are (a timer's marks).
    """
    objectness = output.objectness.float() if objectness_rescoring else None
    base_scores, labels = instance_scores(output.logits.float(), objectness)
    keep_all = base_scores > candidate_threshold  # thresholding comes before the maskness rescoring
    mask_probs = output.masks.float().sigmoid()
    scores = base_scores * maskness(mask_probs, mask_threshold)
    if conf > 0:
        keep_all = keep_all & (scores >= conf)
    selected = []
    for index in range(len(image_sizes)):
        kept = keep_all[index].nonzero().flatten()
        chosen = kept[scores[index][kept].sort(descending=True, stable=True).indices[:max_detections]]
        selected.append((scores[index][chosen], labels[index][chosen], mask_probs[index][chosen]))
    if on_stage is not None:
        on_stage("scores")
    results = []
    for (image_scores, image_labels, probs), image_size, original in zip(selected, image_sizes, original_sizes):
        sizes = (tuple(input_size), tuple(image_size), tuple(original), mask_threshold)
        made = resize_and_threshold(probs, *sizes) if fast_masks else None
        masks, boxes = made if made is not None else with_boxes(reference_resize_and_threshold(probs, *sizes))
        instances = Instances(masks, image_scores, image_labels, boxes, tuple(original))
        empty = boxes[:, 2] <= boxes[:, 0]  # an empty mask has the box (0, 0, 0, 0)
        results.append(instances.select(~empty) if not keep_empty and bool(empty.any()) else instances)
    if on_stage is not None:
        on_stage("masks")
    return results


def with_boxes(masks: Tensor) -> tuple[Tensor, Tensor]:
    return masks, masks_to_boxes(masks)
