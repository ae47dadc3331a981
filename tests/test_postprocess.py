"""Post-processing on hand-built logits with known scores, labels and masks (SPEC 1.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components import SparseInstOutput
from components.postprocess import maskness, masks_to_boxes, postprocess
from sparseinst_cli.data.images import pad_batch, resized_shape
from sparseinst_cli.inference.predictor import Predictor

from .conftest import SMALL_MODEL


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def block_mask_logits(cells: list[tuple[int, int]], inside: float = 0.9, outside: float = 0.1) -> torch.Tensor:
    probs = torch.full((4, 4), outside)
    for r, c in cells:
        probs[r, c] = inside
    return torch.logit(probs)


@pytest.fixture
def hand_built() -> SparseInstOutput:
    # Instance 0: p = (0.2, 0.64), o = 0.25 -> score sqrt(0.16) = 0.4, label 1; mask in the padding.
    # Instance 1: p = (0.9, 0.1),  o = 0.4  -> score sqrt(0.36) = 0.6, label 0; top-left quadrant.
    # Instance 2: p = (1e-4, 1e-4), o = 0.01 -> score 1e-3 < 0.005, dropped.
    logits = torch.tensor([[[logit(0.2), logit(0.64)], [logit(0.9), logit(0.1)], [logit(1e-4), logit(1e-4)]]])
    objectness = torch.tensor([[[logit(0.25)], [logit(0.4)], [logit(0.01)]]])
    masks = torch.stack([
        block_mask_logits([(3, c) for c in range(4)]),  # bottom row of cells: padded rows 12-15
        block_mask_logits([(0, 0), (0, 1), (1, 0), (1, 1)]),
        block_mask_logits([(2, 2)]),
    ]).unsqueeze(0)
    return SparseInstOutput(logits, objectness, masks)


def test_scores_labels_rescoring_and_padding_crop(hand_built: SparseInstOutput) -> None:
    # Padded input 16 x 16; the image is the top 12 rows; it was not resized.
    (result,) = postprocess(hand_built, (16, 16), [(12, 16)], [(12, 16)], keep_empty=True)
    # Sorted by score: instance 1, then instance 0; maskness of both kept instances is 0.9.
    torch.testing.assert_close(result.scores, torch.tensor([0.6 * 0.9, 0.4 * 0.9]))
    assert result.labels.tolist() == [0, 1]
    assert result.masks.shape == (2, 12, 16) and result.masks.dtype == torch.bool
    # Instance 0 lay in the padding only: nothing is left after the crop.
    assert not result.masks[1].any()
    # Bilinear x4 of a 2x2-cell block of 0.9 in 0.1: along one axis, 7 -> 0.6 and 8 -> 0.4, so
    # rows/columns 0-7 pass 0.45, except the corner (7, 7): 0.1 + 0.8 * 0.625^2 = 0.41.
    expected = np.zeros((12, 16), dtype=bool)
    expected[:8, :8] = True
    expected[7, 7] = False
    np.testing.assert_array_equal(result.masks[0].numpy(), expected)
    assert result.boxes.tolist() == [[0, 0, 8, 8], [0, 0, 0, 0]]
    assert result.image_size == (12, 16)
    # Without keep_empty (the default) the empty one is left out.
    (kept,) = postprocess(hand_built, (16, 16), [(12, 16)], [(12, 16)])
    assert len(kept) == 1 and torch.equal(kept.masks[0], result.masks[0]) and kept.boxes.tolist() == [[0, 0, 8, 8]]


def test_resize_to_original_size(hand_built: SparseInstOutput) -> None:
    # The 12 x 16 resized image came from a 6 x 8 original.
    (result,) = postprocess(hand_built, (16, 16), [(12, 16)], [(6, 8)])
    expected = np.zeros((6, 8), dtype=bool)
    expected[:4, :4] = True
    np.testing.assert_array_equal(result.masks[0].numpy(), expected)


def test_batch_with_different_image_sizes(hand_built: SparseInstOutput) -> None:
    batch = SparseInstOutput(*(torch.cat([t, t]) for t in hand_built[:3]))
    first, second = postprocess(batch, (16, 16), [(12, 16), (16, 8)], [(12, 16), (32, 16)])
    assert first.masks.shape[1:] == (12, 16) and second.masks.shape[1:] == (32, 16)
    # In the second image the bottom cells are inside the image, so instance 0 (second by score)
    # keeps a mask; in the first it is empty and left out.
    assert len(first) == 1 and len(second) == 2
    assert second.masks[1].any() and second.masks[1, :24].sum() == 0


def test_thresholds_and_max_detections() -> None:
    n = 5
    logits = torch.full((1, n, 1), 3.0)
    objectness = torch.linspace(-1, 1, n).view(1, n, 1)
    masks = torch.full((1, n, 4, 4), 2.0)
    output = SparseInstOutput(logits, objectness, masks)
    (all_kept,) = postprocess(output, (16, 16), [(16, 16)], [(16, 16)])
    assert len(all_kept) == n and (all_kept.scores[:-1] > all_kept.scores[1:]).all()  # best first
    (top_two,) = postprocess(output, (16, 16), [(16, 16)], [(16, 16)], max_detections=2)
    torch.testing.assert_close(top_two.scores, all_kept.scores[:2])
    (none,) = postprocess(output, (16, 16), [(16, 16)], [(16, 16)], candidate_threshold=0.99)
    assert len(none) == 0 and none.masks.shape == (0, 16, 16) and none.boxes.shape == (0, 4)


def test_maskness_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.7, 0.5, 0.3, 0.1]]).view(1, 1, 5)
    torch.testing.assert_close(maskness(probs, 0.45), torch.tensor([(0.9 + 0.7 + 0.5) / 3]), rtol=1e-5, atol=1e-6)
    assert maskness(torch.full((1, 2, 2), 0.2)).item() == 0.0


def test_masks_to_boxes() -> None:
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]


def test_resized_shape_follows_spec() -> None:
    assert resized_shape(480, 640, 640, 853) == (640, 853)
    assert resized_shape(1000, 500, 640, 853) == (853, 427)
    assert resized_shape(640, 640, 640, 853) == (640, 640)
    assert resized_shape(100, 200, 640, 853) == (427, 853)


def test_preprocess_normalizes_and_pads_with_zeros() -> None:
    predictor = Predictor.from_recipe("r50_giam", overrides=SMALL_MODEL)
    mean = np.array(predictor.recipe.input.pixel_mean)
    image = np.broadcast_to(np.round(mean).astype(np.uint8), (50, 100, 3)).copy()
    batch = predictor.preprocess([image, np.zeros((100, 50, 3), np.uint8)])
    assert batch.image_sizes == [(427, 853), (853, 427)]
    assert batch.images.shape == (2, 3, 864, 864)
    first = batch.images[0, :, :427, :853]
    assert first.abs().max() < 0.01  # the mean colour normalizes to ~0
    assert batch.images[0, :, 427:].abs().max() == 0 and batch.images[1, :, :, 427:].abs().max() == 0
    torch.testing.assert_close(batch.images[1, :, :853, :427].mean((1, 2)),
                               torch.tensor(-mean / np.array(predictor.recipe.input.pixel_std), dtype=torch.float32),
                               rtol=1e-4, atol=1e-4)


def test_pad_batch_to_multiple() -> None:
    padded = pad_batch([torch.ones(3, 33, 20), torch.ones(3, 10, 70)], 32)
    assert padded.shape == (2, 3, 64, 96)
    assert padded[0, :, :33, :20].min() == 1 and padded[0, :, 33:].max() == 0


def test_predictor_end_to_end_on_a_small_model() -> None:
    from .conftest import shapes_image

    predictor = Predictor.from_recipe("r50_giam", overrides=SMALL_MODEL)
    results = predictor([shapes_image(90, 120), shapes_image(60, 40, seed=1)], conf=0.0)
    assert [r.image_size for r in results] == [(90, 120), (60, 40)]
    for result in results:
        assert 0 < len(result) <= 10
        assert result.masks.shape[1:] == result.image_size
        assert ((result.scores > 0) & (result.scores <= 1)).all()
        assert (result.labels < 3).all()
