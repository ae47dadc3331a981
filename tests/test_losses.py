"""SparseInst's loss terms against values computed by hand on tiny tensors (SPEC 2)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from components import SparseInstOutput, build
from components.losses import (
    Target,
    dice_loss,
    downsample_target_masks,
    mask_iou,
    sigmoid_focal_loss,
)

L3 = math.log(3.0)  # sigmoid(+-L3) = 0.75 / 0.25


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def tiny_case() -> tuple[SparseInstOutput, list[Target], list[tuple[torch.Tensor, torch.Tensor]]]:
    """1 image, N=2, C=2, 2x2 masks; prediction 0 is matched to the single target (class 1).

    sigmoid(pred 0) = [[.75, .75], [.25, .25]], target = [[1, 0], [1, 0]].
    """
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]], requires_grad=True)
    objectness = torch.tensor([[[0.5], [-0.5]]], requires_grad=True)
    masks = torch.tensor([[[[L3, L3], [-L3, -L3]], [[0.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    target = Target(torch.tensor([1]), torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))
    return SparseInstOutput(logits, objectness, masks), [target], [(torch.tensor([0]), torch.tensor([0]))]


# By hand for tiny_case, before weights and before dividing by the instance count.
FOCAL_CLS = (
    2 * -0.75 * 0.5**2 * math.log(0.5)  # the two logits 0 with target 0
    - 0.25 * (1 - sigmoid(1.0)) ** 2 * math.log(sigmoid(1.0))  # logit 1, target 1
    - 0.75 * sigmoid(-1.0) ** 2 * math.log(1 - sigmoid(-1.0))  # logit -1, target 0
)
DICE = 1 - 2 * (0.75 + 0.25) / (2 * 0.75**2 + 2 * 0.25**2 + 2 + 1e-4)
BCE = -(2 * math.log(0.75) + 2 * math.log(0.25)) / 4
FOCAL_PIXEL = (
    -0.25 * 0.25**2 * math.log(0.75) - 0.75 * 0.75**2 * math.log(0.25)
    - 0.25 * 0.75**2 * math.log(0.25) - 0.75 * 0.25**2 * math.log(0.75)
) / 4
IOU = 1 / (3 + 1e-6)  # predicted top row vs target left column: 1 pixel over 3
OBJ_BCE = -(IOU * math.log(sigmoid(0.5)) + (1 - IOU) * math.log(1 - sigmoid(0.5)))
OBJ_L1 = abs(sigmoid(0.5) - IOU)


def check(losses: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].dtype == torch.float32 and losses[key].shape == ()
        assert losses[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_default_terms_by_hand() -> None:
    losses = build("loss", "sparseinst", num_classes=2)(*tiny_case(), num_instances=2.0)
    check(losses, {"loss_cls": 2.0 * FOCAL_CLS / 2, "loss_dice": 2.0 * DICE / 2, "loss_mask": 5.0 * BCE,
                   "loss_objectness": 1.0 * OBJ_BCE})


def test_weights_options_and_clamped_count() -> None:
    criterion = build("loss", "sparseinst", num_classes=2, class_weight=1.0, dice_weight=3.0, pixel_weight=0.5,
                      objectness_weight=4.0, pixel_loss="focal", objectness_loss="iou_l1")
    losses = criterion(*tiny_case(), num_instances=0.25)  # clamped to 1
    check(losses, {"loss_cls": FOCAL_CLS, "loss_dice": 3.0 * DICE, "loss_mask": 0.5 * FOCAL_PIXEL,
                   "loss_objectness": 4.0 * OBJ_L1})


def test_none_options_drop_keys() -> None:
    criterion = build("loss", "sparseinst", num_classes=2, pixel_loss="none", objectness_loss="none")
    assert set(criterion(*tiny_case(), num_instances=1.0)) == {"loss_cls", "loss_dice"}


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValidationError):
        build("loss", "sparseinst", num_classes=2, pixel_loss="l2")
    with pytest.raises(ValidationError):
        build("loss", "sparseinst", num_classes=2, dice_weight=-1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs_are_lossed_in_fp32(dtype: torch.dtype) -> None:
    output, targets, matches = tiny_case()
    half = SparseInstOutput(*(t.detach().to(dtype) for t in output[:3]))
    rounded = SparseInstOutput(*(t.float() for t in half[:3]))
    criterion = build("loss", "sparseinst", num_classes=2)
    got, want = criterion(half, targets, matches, 1.0), criterion(rounded, targets, matches, 1.0)
    for key in want:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], want[key])


@pytest.mark.parametrize("pixel_loss", ["bce", "focal"])
def test_batch_without_instances(pixel_loss: str) -> None:
    shapes = [(2, 3, 2), (2, 3, 1), (2, 3, 4, 4)]
    output = SparseInstOutput(*(torch.randn(*shape, requires_grad=True) for shape in shapes))
    empty = Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4, 4))
    no_match = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    losses = build("loss", "sparseinst", num_classes=2, pixel_loss=pixel_loss)(
        output, [empty, empty], [no_match, no_match], 0.0)
    assert set(losses) == {"loss_cls", "loss_dice", "loss_mask", "loss_objectness"}
    expected_cls = 2.0 * sigmoid_focal_loss(output.logits.detach(), torch.zeros(2, 3, 2), reduction="sum")
    torch.testing.assert_close(losses["loss_cls"].detach(), expected_cls)
    assert all(losses[key].item() == 0.0 for key in ("loss_dice", "loss_mask", "loss_objectness"))
    sum(losses.values()).backward()
    assert torch.count_nonzero(output.masks.grad) == 0 and torch.count_nonzero(output.objectness.grad) == 0
    assert torch.isfinite(output.logits.grad).all() and output.logits.grad.abs().sum() > 0


def test_image_without_instances_leaves_matched_terms_alone() -> None:
    output, targets, matches = tiny_case()
    empty = Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2, 2))
    pad = SparseInstOutput(*(torch.cat([torch.zeros_like(t), t]) for t in output[:3]))  # empty image first
    no_match = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    losses = build("loss", "sparseinst", num_classes=2)(pad, [empty, *targets], [no_match, *matches], 1.0)
    extra_cls = 4 * -0.75 * 0.5**2 * math.log(0.5)  # the empty image's 4 zero logits, all negatives
    check(losses, {"loss_cls": 2.0 * (FOCAL_CLS + extra_cls), "loss_dice": 2.0 * DICE, "loss_mask": 5.0 * BCE,
                   "loss_objectness": OBJ_BCE})


def test_backward_reaches_matched_heads_only_through_objectness_score() -> None:
    output, targets, matches = tiny_case()
    losses = build("loss", "sparseinst", num_classes=2)(output, targets, matches, 1.0)
    losses["loss_objectness"].backward()
    assert output.masks.grad is None  # the IoU target is detached
    assert output.objectness.grad[0, 0, 0] == pytest.approx(sigmoid(0.5) - IOU) and output.objectness.grad[0, 1] == 0


def test_size_mismatch_raises() -> None:
    output, targets, matches = tiny_case()
    wrong = [Target(targets[0].labels, torch.zeros(1, 3, 3))]
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 2\)"):
        build("loss", "sparseinst", num_classes=2)(output, wrong, matches, 1.0)


def test_dice_loss_and_focal_by_hand() -> None:
    logits = torch.tensor([[L3, -L3], [0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = [1 - 1.5 / (0.75**2 + 0.25**2 + 1 + 1e-4), 1.0]
    torch.testing.assert_close(dice_loss(logits, targets), torch.tensor(expected))
    focal = sigmoid_focal_loss(torch.tensor([L3]), torch.tensor([1.0]), reduction="none")
    assert focal.item() == pytest.approx(-0.25 * 0.25**2 * math.log(0.75))


def test_mask_iou_thresholds() -> None:
    # sigmoid(logits) = [.75, .45, .25, .5]: predicted on at 0 and 1 (>= 0.4); targets on where > 0.5
    logits = torch.tensor([[L3, math.log(0.45 / 0.55), -L3, 0.0]])
    targets = torch.tensor([[1.0, 0.5, 0.9, 0.0]])
    # pred {0, 1, 3}, target {0, 2}: intersection 1, union 4
    torch.testing.assert_close(mask_iou(logits, targets), torch.tensor([1 / (4 + 1e-6)]))
    assert mask_iou(torch.full((1, 4), -10.0), torch.zeros(1, 4)).item() == 0.0  # both empty
    assert mask_iou(torch.full((1, 4), 10.0), torch.ones(1, 4)).item() == pytest.approx(1.0)


def test_downsample_target_masks() -> None:
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True  # centred 2x2 block: each 2x2 output pixel averages one "on" pixel of 4
    masks[1, :2, :2] = True  # top-left block: exactly the top-left output pixel
    out = downsample_target_masks(masks, (2, 2))
    assert out.dtype == torch.float32 and out.shape == (2, 2, 2)
    torch.testing.assert_close(out[0], torch.full((2, 2), 0.25))
    torch.testing.assert_close(out[1], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert downsample_target_masks(torch.zeros(0, 8, 8, dtype=torch.uint8), (4, 3)).shape == (0, 4, 3)
