"""Hungarian matcher: known permutations, batching, empty targets, precisions, alpha (SPEC 2)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from components import SparseInstOutput, build
from components.losses import Target
from components.matcher import MATCH_ALPHA, pairwise_dice

SIZE = 6


def block_masks(count: int, size: int = SIZE) -> torch.Tensor:
    """(count, size, size) disjoint masks: mask j is row band j of the image."""
    masks = torch.zeros(count, size, size)
    for j in range(count):
        masks[j, j * size // count : (j + 1) * size // count] = 1.0
    return masks


def permuted_case(perm: list[int], num_preds: int, num_classes: int = 4) -> tuple[SparseInstOutput, Target]:
    """Prediction perm[j] matches target j exactly (mask and class, logits +-10); other
    predictions are background everywhere."""
    k = len(perm)
    target = Target(labels=torch.arange(k) % num_classes, masks=block_masks(k))
    logits = torch.full((1, num_preds, num_classes), -10.0)
    masks = torch.full((1, num_preds, SIZE, SIZE), -10.0)
    for j, i in enumerate(perm):
        logits[0, i, target.labels[j]] = 10.0
        masks[0, i] = 20.0 * target.masks[j] - 10.0
    return SparseInstOutput(logits, torch.zeros(1, num_preds, 1), masks), target


def as_pairs(match: tuple[torch.Tensor, torch.Tensor]) -> dict[int, int]:
    return dict(zip(match[1].tolist(), match[0].tolist()))  # target -> prediction


def test_default_alpha_and_validation() -> None:
    assert build("matcher", "dice_hungarian").alpha == MATCH_ALPHA == 0.8
    with pytest.raises(ValidationError):
        build("matcher", "dice_hungarian", alpha=1.5)


def test_pairwise_dice_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    expected = torch.tensor([
        [2 * 0.5 / (0.5 + 1 + 1e-4), 2 * 1.0 / (0.5 + 2 + 1e-4)],
        [2 * 1.0 / (1 + 1 + 1e-4), 2 * 1.0 / (1 + 2 + 1e-4)],
    ])
    torch.testing.assert_close(pairwise_dice(probs, targets), expected)


@pytest.mark.parametrize("perm", [[2, 0, 4], [4, 3, 2, 1, 0], [1]])
def test_recovers_known_permutation(perm: list[int]) -> None:
    output, target = permuted_case(perm, num_preds=5)
    (pred, tgt), = build("matcher", "dice_hungarian")(output, [target])
    assert pred.dtype == tgt.dtype == torch.int64 and pred.device.type == "cpu"
    assert len(pred) == len(tgt) == len(perm)
    assert pred.tolist() == sorted(pred.tolist())
    assert as_pairs((pred, tgt)) == dict(enumerate(perm))


def test_more_targets_than_predictions_gives_n_pairs() -> None:
    output, target = permuted_case([0, 1], num_preds=2)
    extra = Target(torch.cat([target.labels, torch.tensor([3])]), torch.cat([target.masks, block_masks(1)]))
    pred, tgt = build("matcher", "dice_hungarian")(output, [extra])[0]
    assert len(pred) == len(tgt) == 2 and sorted(pred.tolist()) == [0, 1]


def test_batched_equals_one_at_a_time() -> None:
    batch, n, c = 3, 7, 3
    output = SparseInstOutput(torch.randn(batch, n, c), torch.randn(batch, n, 1), torch.randn(batch, n, SIZE, SIZE))
    targets = [Target(torch.randint(0, c, (k,)), (torch.rand(k, SIZE, SIZE) > 0.5).float()) for k in (2, 0, 5)]
    matcher = build("matcher", "dice_hungarian")
    batched = matcher(output, targets)
    for b in range(batch):
        single = SparseInstOutput(*(t[b : b + 1] for t in output[:3]))
        (pred, tgt), = matcher(single, [targets[b]])
        assert torch.equal(batched[b][0], pred) and torch.equal(batched[b][1], tgt)
    assert [len(p) for p, _ in batched] == [2, 0, 5]


def test_images_without_targets() -> None:
    output = SparseInstOutput(torch.randn(2, 4, 3), torch.randn(2, 4, 1), torch.randn(2, 4, SIZE, SIZE))
    empty = Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, SIZE, SIZE))
    for pred, tgt in build("matcher", "dice_hungarian")(output, [empty, empty]):
        assert pred.shape == tgt.shape == (0,) and pred.dtype == tgt.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gives_fp32_assignment(dtype: torch.dtype) -> None:
    output, target = permuted_case([3, 0, 2], num_preds=6)
    half = SparseInstOutput(*(t.to(dtype) for t in output[:3]))
    matcher = build("matcher", "dice_hungarian")
    assert as_pairs(matcher(half, [target])[0]) == as_pairs(matcher(output, [target])[0]) == {0: 3, 1: 0, 2: 2}
    # random logits: the same assignment as fp32 on the same (rounded) values
    output = SparseInstOutput(torch.randn(1, 8, 3), torch.randn(1, 8, 1), 4 * torch.randn(1, 8, SIZE, SIZE))
    half = SparseInstOutput(*(t.to(dtype) for t in output[:3]))
    rounded = SparseInstOutput(*(t.float() for t in half[:3]))
    target = Target(torch.tensor([0, 2, 1, 1]), (torch.rand(4, SIZE, SIZE) > 0.5).float())
    for got, want in zip(matcher(half, [target])[0], matcher(rounded, [target])[0]):
        assert torch.equal(got, want)


def test_fp16_sums_that_overflow_fp16_still_match() -> None:
    """Sums over 256 x 256 pixels exceed fp16's range (65504); the matcher sums in fp32."""
    size, n = 256, 3
    target = Target(torch.tensor([0, 1]), torch.zeros(2, size, size))
    target.masks[0, :, : size // 2] = 1.0
    target.masks[1, :, size // 2 :] = 1.0
    masks = torch.full((1, n, size, size), -10.0)
    masks[0, 2] = 20.0 * target.masks[0] - 10.0
    masks[0, 0] = 20.0 * target.masks[1] - 10.0
    logits = torch.tensor([[[-5.0, 5.0], [0.0, 0.0], [5.0, -5.0]]])
    output = SparseInstOutput(logits.half(), torch.zeros(1, n, 1).half(), masks.half())
    assert as_pairs(build("matcher", "dice_hungarian")(output, [target])[0]) == {0: 2, 1: 0}


def test_alpha_trades_mask_against_class() -> None:
    """Prediction 0 has target 0's mask but target 1's class, prediction 1 the reverse."""
    target = Target(torch.tensor([0, 1]), block_masks(2))
    masks = torch.stack([20.0 * target.masks[0] - 10.0, 20.0 * target.masks[1] - 10.0])[None]
    logits = torch.tensor([[[-10.0, 10.0], [10.0, -10.0]]])
    output = SparseInstOutput(logits, torch.zeros(1, 2, 1), masks)
    by_mask = build("matcher", "dice_hungarian", alpha=1.0)(output, [target])[0]
    by_class = build("matcher", "dice_hungarian", alpha=0.0)(output, [target])[0]
    assert as_pairs(by_mask) == {0: 0, 1: 1}
    assert as_pairs(by_class) == {0: 1, 1: 0}


def test_nan_costs_do_not_raise() -> None:
    output = SparseInstOutput(torch.full((1, 3, 2), float("nan")), torch.zeros(1, 3, 1),
                              torch.full((1, 3, SIZE, SIZE), float("nan")))
    pred, tgt = build("matcher", "dice_hungarian")(output, [Target(torch.tensor([0, 1]), block_masks(2))])[0]
    assert len(pred) == len(tgt) == 2


def test_no_gradient_and_size_check() -> None:
    output, target = permuted_case([1, 0], num_preds=3)
    output = SparseInstOutput(output.logits.requires_grad_(), output.objectness, output.masks.requires_grad_())
    pred, tgt = build("matcher", "dice_hungarian")(output, [target])[0]
    assert not pred.requires_grad
    small = Target(target.labels, target.masks[:, :3, :3])
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(6, 6\)"):
        build("matcher", "dice_hungarian")(output, [small])
