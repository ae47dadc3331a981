"""Bipartite matching of predictions to ground truth (SPEC 2).

Per image, C_ij = dice(m_i, t_j)^alpha * p_i(c_j)^(1 - alpha) is maximized with the Hungarian
algorithm; no gradient, fp32 whatever precision the model ran in.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .decoder import SparseInstOutput
from .losses import DICE_EPS, Matches, Target, check_target_sizes
from .registry import register

MATCH_ALPHA = 0.8


def pairwise_dice(pred_probs: Tensor, targets: Tensor) -> Tensor:
    """(N, P) mask probabilities and (K, P) targets -> (N, K) dice of every pair."""
    numerator = 2 * pred_probs @ targets.T
    denominator = (pred_probs * pred_probs).sum(-1)[:, None] + (targets * targets).sum(-1)[None, :]
    return numerator / (denominator + DICE_EPS)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of the N predictions of each image to its K targets.

    Returns, per image, (prediction indices, target indices): int64 CPU tensors of length
    min(N, K), prediction indices ascending; two empty tensors for an image without targets.
    """

    def __init__(self, alpha: float = MATCH_ALPHA) -> None:
        super().__init__()
        self.alpha = alpha

    def cost(self, class_probs: Tensor, mask_probs: Tensor, target: Target) -> Tensor:
        """(N, C) class and (N, P) mask probabilities -> (N, K) fp32 matching score (higher
        is better), NaN replaced by 0."""
        target_masks = target.masks.to(mask_probs.device, torch.float32).flatten(1)
        dice = pairwise_dice(mask_probs, target_masks)
        class_score = class_probs[:, target.labels.to(class_probs.device)]
        score = dice.clamp(min=0).pow(self.alpha) * class_score.pow(1 - self.alpha)
        return torch.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)

    @torch.no_grad()
    def forward(self, output: SparseInstOutput, targets: list[Target]) -> Matches:
        if len(targets) != len(output.masks):
            raise ValueError(f"{len(output.masks)} images but {len(targets)} targets")
        check_target_sizes(output, targets)
        class_probs = output.logits.float().sigmoid()  # (B, N, C)
        mask_probs = output.masks.float().sigmoid().flatten(2)  # (B, N, h * w)
        matches = []
        for b, target in enumerate(targets):
            if len(target.labels) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            score = self.cost(class_probs[b], mask_probs[b], target)
            rows, cols = linear_sum_assignment(score.cpu().numpy(), maximize=True)
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches


@register("matcher", "dice_hungarian")
def dice_hungarian(alpha: Annotated[float, Field(ge=0.0, le=1.0)] = MATCH_ALPHA) -> HungarianMatcher:
    """Hungarian matching on dice^alpha * class probability^(1 - alpha) (SPEC 2)."""
    return HungarianMatcher(alpha)
