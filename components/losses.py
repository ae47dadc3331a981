"""Training targets and SparseInst's losses (SPEC 2): class focal, mask dice, mask pixel, and
IoU-aware objectness, each over the predictions the matcher paired with ground truth.

Everything is computed in fp32, whatever precision the model ran in.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchvision.ops
from pydantic import Field, NonNegativeFloat
from torch import Tensor, nn

from .decoder import SparseInstOutput
from .registry import register

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_EPS = 1e-4  # dice = 2 * sum(p * t) / (sum(p^2) + sum(t^2) + eps)
OBJECTNESS_MASK_THRESHOLD = 0.4  # a predicted pixel is "on" when sigmoid >= this
OBJECTNESS_TARGET_THRESHOLD = 0.5  # a target pixel is "on" when > this
IOU_EPS = 1e-6  # IoU = intersection / (union + eps), so two empty masks have IoU 0
CLASS_WEIGHT = 2.0
DICE_WEIGHT = 2.0
PIXEL_WEIGHT = 5.0  # official; the paper's text says 2.0
OBJECTNESS_WEIGHT = 1.0

Reduction = Literal["none", "mean", "sum"]
Matches = list[tuple[Tensor, Tensor]]


class Target(NamedTuple):
    """The ground truth of one image with K instances."""

    labels: Tensor  # (K,) int64 contiguous class indices
    masks: Tensor  # (K, h, w) float in [0, 1], at the prediction resolution


def downsample_target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(K, Hp, Wp) bool/uint8/float masks, padded to the batch size -> (K, h, w) float32 at
    ``size``, bilinear with ``align_corners=False``. K may be 0.

    When both sides shrink by the same even factor f (the usual case: padded images are
    multiples of 32 and the mask logits have a quarter of their size), each output pixel lies
    half-way between source pixels f*i + f/2 - 1 and f*i + f/2 along each axis, so it is the mean
    of those 2 x 2 pixels. That is read straight from the strided source without making a float
    copy of the full-resolution masks (100 masks at 640 x 864 are 220 MB in float32).
    """
    height, width = masks.shape[-2:]
    factor, remainder = divmod(height, size[0])
    if remainder == 0 and factor % 2 == 0 and width == size[1] * factor:
        first, count = factor // 2 - 1, len(masks)
        if masks.dtype == torch.bool:
            masks = masks.to(torch.uint8)
        rows = masks.reshape(count, size[0], factor, width)
        rows = rows[:, :, first] + rows[:, :, first + 1]  # (K, h, Wp); uint8 sums stay <= 2
        pixels = rows.reshape(count, size[0], size[1], factor)
        return (pixels[..., first] + pixels[..., first + 1]).float() * 0.25
    resized = F.interpolate(masks[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)
    return resized[:, 0]


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA,
    reduction: Reduction = "none",
) -> Tensor:
    """Focal loss of RetinaNet on logits and same-shape float targets in [0, 1] (torchvision's)."""
    return torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)


def dice_loss(pred_logits: Tensor, targets: Tensor) -> Tensor:
    """(M, P) mask logits and (M, P) targets -> (M,) 1 - dice of sigmoid(logits) with targets."""
    probs = pred_logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = (probs * probs).sum(-1) + (targets * targets).sum(-1) + DICE_EPS
    return 1 - numerator / denominator


def mask_iou(pred_logits: Tensor, targets: Tensor) -> Tensor:
    """(M, P) mask logits and (M, P) targets -> (M,) IoU of (sigmoid >= 0.4) with (target > 0.5).

    The union gets ``IOU_EPS`` added, so two empty masks have IoU 0 (as in the official code).
    """
    pred = (pred_logits.sigmoid() >= OBJECTNESS_MASK_THRESHOLD).float()
    target = (targets > OBJECTNESS_TARGET_THRESHOLD).float()
    intersection = (pred * target).sum(-1)
    union = pred.sum(-1) + target.sum(-1) - intersection
    return intersection / (union + IOU_EPS)


def check_target_sizes(output: SparseInstOutput, targets: list[Target]) -> None:
    """Raise ValueError unless every target's masks have the size of the mask logits."""
    size = tuple(output.masks.shape[-2:])
    for index, target in enumerate(targets):
        if tuple(target.masks.shape[-2:]) != size:
            raise ValueError(f"target masks of image {index} are {tuple(target.masks.shape[-2:])} but the "
                             f"mask logits are {size}; resize targets with downsample_target_masks")


@register("loss", "sparseinst")
class SparseInstLoss(nn.Module):
    """SparseInst's loss: focal class, dice and pixel mask, IoU-aware objectness (SPEC 2).

    Weighted loss terms for a batch, given the matcher's pairs.

    Args:
        num_classes: C.
        pixel_loss: "bce" (paper), "focal" (Table 7's dice + focal ablation) or "none".
        objectness_loss: "iou_bce" (paper), "iou_l1" (|sigmoid(s) - IoU|) or "none".
        focal_alpha, focal_gamma: of the class loss and of the focal pixel loss.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: NonNegativeFloat = CLASS_WEIGHT,
        dice_weight: NonNegativeFloat = DICE_WEIGHT,
        pixel_weight: NonNegativeFloat = PIXEL_WEIGHT,
        objectness_weight: NonNegativeFloat = OBJECTNESS_WEIGHT,
        pixel_loss: Literal["bce", "focal", "none"] = "bce",
        objectness_loss: Literal["iou_bce", "iou_l1", "none"] = "iou_bce",
        focal_alpha: Annotated[float, Field(ge=0.0, le=1.0)] = FOCAL_ALPHA,
        focal_gamma: NonNegativeFloat = FOCAL_GAMMA,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_weight, self.dice_weight = class_weight, dice_weight
        self.pixel_weight, self.objectness_weight = pixel_weight, objectness_weight
        self.pixel_loss, self.objectness_loss = pixel_loss, objectness_loss
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def forward(
        self, output: SparseInstOutput, targets: list[Target], matches: Matches, num_instances: float
    ) -> dict[str, Tensor]:
        """Keys "loss_cls", "loss_dice", "loss_mask" (unless pixel_loss is "none") and
        "loss_objectness" (unless objectness_loss is "none"); each a weighted fp32 scalar.

        ``matches[b]`` = (prediction indices, target indices) of image b; ``num_instances`` is
        the batch's ground-truth count (averaged over workers), clamped here to at least 1.
        """
        if output.logits.shape[-1] != self.num_classes:
            raise ValueError(f"class logits have {output.logits.shape[-1]} classes, expected {self.num_classes}")
        if not len(targets) == len(matches) == len(output.masks):
            raise ValueError(f"{len(output.masks)} images but {len(targets)} targets and {len(matches)} matches")
        check_target_sizes(output, targets)
        num_instances = max(float(num_instances), 1.0)
        logits, objectness, masks = output.logits.float(), output.objectness.float(), output.masks.float()
        device = logits.device
        batch_index = torch.cat([torch.full_like(pred, b) for b, (pred, _) in enumerate(matches)]).to(device)
        pred_index = torch.cat([pred for pred, _ in matches]).to(device)
        labels = torch.cat([t.labels[tgt.to(t.labels.device)].to(device) for t, (_, tgt) in zip(targets, matches)])
        target_masks = torch.cat([t.masks[tgt.to(t.masks.device)].to(device, torch.float32)
                                  for t, (_, tgt) in zip(targets, matches)])

        class_targets = torch.zeros_like(logits)
        class_targets[batch_index, pred_index, labels] = 1.0
        focal = sigmoid_focal_loss(logits, class_targets, self.focal_alpha, self.focal_gamma, reduction="sum")
        losses = {"loss_cls": self.class_weight * focal / num_instances}

        pred_masks = masks[batch_index, pred_index].flatten(1)  # (M, h * w)
        target_masks = target_masks.flatten(1)
        if len(pred_masks) == 0:  # no pairs: zero terms that are still part of the graph
            zero = masks.sum() * 0.0
            losses["loss_dice"] = zero
            if self.pixel_loss != "none":
                losses["loss_mask"] = zero
            if self.objectness_loss != "none":
                losses["loss_objectness"] = objectness.sum() * 0.0
            return losses

        losses["loss_dice"] = self.dice_weight * dice_loss(pred_masks, target_masks).sum() / num_instances
        if self.pixel_loss == "bce":
            pixel = F.binary_cross_entropy_with_logits(pred_masks, target_masks, reduction="mean")
            losses["loss_mask"] = self.pixel_weight * pixel
        elif self.pixel_loss == "focal":
            pixel = sigmoid_focal_loss(pred_masks, target_masks, self.focal_alpha, self.focal_gamma, "mean")
            losses["loss_mask"] = self.pixel_weight * pixel
        if self.objectness_loss != "none":
            iou = mask_iou(pred_masks.detach(), target_masks)
            scores = objectness[batch_index, pred_index, 0]
            if self.objectness_loss == "iou_bce":
                term = F.binary_cross_entropy_with_logits(scores, iou, reduction="mean")
            else:
                term = (scores.sigmoid() - iou).abs().mean()
            losses["loss_objectness"] = self.objectness_weight * term
        return losses
