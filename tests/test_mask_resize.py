"""The memory-speed mask kernel gives exactly the reference's masks and boxes (SPEC 1.5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components import SparseInstOutput
from components.mask_resize import (
    kernel_agrees_with_torch,
    reference_resize_and_threshold,
    resize_and_threshold,
)
from components.postprocess import MASK_THRESHOLD, masks_to_boxes, postprocess

THRESHOLD = torch.tensor(MASK_THRESHOLD, dtype=torch.float32)
# (low-resolution size, padded input size, resized image size, original size)
GEOMETRIES = {
    "one resize": ((40, 54), (160, 216), (157, 213), (157, 213)),
    "down to the original": ((40, 54), (160, 216), (157, 213), (111, 150)),
    "up to the original": ((40, 54), (160, 216), (157, 213), (301, 403)),
    "stretched": ((40, 54), (160, 216), (157, 213), (157, 300)),
    "odd sizes": ((37, 53), (148, 212), (145, 209), (97, 141)),
    "non-integer scale": ((30, 41), (97, 131), (97, 131), (200, 90)),
    "full padded size": ((24, 32), (96, 128), (96, 128), (96, 128)),
    "narrower than the decoder's map": ((40, 54), (160, 216), (157, 213), (100, 40)),
}


def smooth_probs(count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = F.avg_pool2d(torch.randn(1, count, *size, generator=generator) * 6, 5, 1, 2)[0]
    return logits.sigmoid()


def adversarial_probs(size: tuple[int, int]) -> torch.Tensor:
    """Values exactly at the threshold and one float32 step either side, flat maps, one-pixel
    masks, a NaN, and maps of the threshold with scattered neighbours."""
    h, w = size
    just_above = torch.nextafter(THRESHOLD, torch.tensor(1.0))
    just_below = torch.nextafter(THRESHOLD, torch.tensor(0.0))
    maps = [torch.full(size, MASK_THRESHOLD), torch.full(size, float(just_above)), torch.full(size, float(just_below)),
            torch.zeros(size), torch.ones(size)]
    one_pixel = torch.zeros(size)
    one_pixel[h // 2, w // 3] = 1.0
    corner = torch.zeros(size)
    corner[0, 0] = 1.0
    far_corner = torch.zeros(size)
    far_corner[-1, -1] = 0.5
    checker = torch.where((torch.arange(h)[:, None] + torch.arange(w)) % 2 == 0, THRESHOLD, just_above)
    scattered = torch.where(torch.rand(size, generator=torch.Generator().manual_seed(1)) < 0.2, just_above,
                            THRESHOLD.expand(size))
    with_nan = torch.full(size, 0.9)
    with_nan[h // 2, w // 2] = float("nan")
    return torch.stack([*maps, one_pixel, corner, far_corner, checker, scattered, with_nan]).float()


def test_the_kernel_agrees_with_torch_here():
    assert kernel_agrees_with_torch()


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("kind", ["random", "smooth", "adversarial"])
def test_masks_and_boxes_equal_the_reference_bit_for_bit(geometry, kind):
    low, input_size, image_size, original = geometry
    probs = {"random": lambda: torch.rand(6, *low, generator=torch.Generator().manual_seed(3)),
             "smooth": lambda: smooth_probs(12, low, seed=4), "adversarial": lambda: adversarial_probs(low)}[kind]()
    made = resize_and_threshold(probs, input_size, image_size, original, MASK_THRESHOLD)
    assert made is not None
    masks, boxes = made
    expected = reference_resize_and_threshold(probs, input_size, image_size, original, MASK_THRESHOLD)
    assert masks.shape == expected.shape == (probs.shape[0], *original)
    assert int((masks != expected).sum()) == 0
    assert torch.equal(boxes, masks_to_boxes(expected))


def test_the_adversarial_maps_exercise_both_answers():
    probs = adversarial_probs((40, 54))
    masks, boxes = resize_and_threshold(probs, (160, 216), (157, 213), (111, 150), MASK_THRESHOLD)
    per_map = masks.flatten(1).float().mean(1)
    assert per_map[0] == 0 and per_map[1] == 1 and per_map[2] == 0  # at, just above, just below
    assert 0 < per_map[5] < 0.01 and boxes[5].tolist() != [0, 0, 0, 0]  # the one-pixel mask survives
    assert 0.5 < per_map[10] < 1  # the NaN's neighbourhood is False, as in the reference


def test_one_thread_and_two_threads_agree():
    probs = smooth_probs(8, (40, 54), seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = resize_and_threshold(probs, (160, 216), (157, 213), (120, 160), MASK_THRESHOLD)
        torch.set_num_threads(2)
        double = resize_and_threshold(probs, (160, 216), (157, 213), (120, 160), MASK_THRESHOLD)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], double[0]) and torch.equal(single[1], double[1])


def test_no_instances_give_empty_masks_of_the_right_size():
    masks, boxes = resize_and_threshold(torch.zeros(0, 40, 54), (160, 216), (157, 213), (111, 150), MASK_THRESHOLD)
    assert masks.shape == (0, 111, 150) and masks.dtype == torch.bool and boxes.shape == (0, 4)


def test_where_the_kernel_does_not_apply_it_declines():
    probs = torch.rand(3, 8, 8)
    assert resize_and_threshold(probs, (32, 32), (30, 31), (30, 31), MASK_THRESHOLD) is None  # 32 + 32 <= 128
    assert resize_and_threshold(probs, (32, 128), (30, 120), (40, 60), MASK_THRESHOLD) is None  # 40 + 60 <= 128
    assert resize_and_threshold(probs.double(), (32, 128), (30, 120), (90, 60), MASK_THRESHOLD) is None


@pytest.mark.parametrize("original", [(157, 213), (111, 150), (40, 60)])
def test_postprocess_gives_the_same_instances_either_way(original):
    generator = torch.Generator().manual_seed(6)
    output = SparseInstOutput(logits=torch.randn(1, 20, 5, generator=generator),
                              objectness=torch.randn(1, 20, 1, generator=generator),
                              masks=torch.logit(smooth_probs(20, (40, 54), seed=7)).unsqueeze(0))
    fast, = postprocess(output, (160, 216), [(157, 213)], [original])
    reference, = postprocess(output, (160, 216), [(157, 213)], [original], fast_masks=False)
    assert len(fast) == len(reference) > 0
    for name in ("masks", "scores", "labels", "boxes"):
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name


def test_postprocess_reports_its_stages_in_order():
    output = SparseInstOutput(logits=torch.randn(1, 4, 3), objectness=torch.randn(1, 4, 1),
                              masks=torch.randn(1, 4, 40, 54))
    stages = []
    postprocess(output, (160, 216), [(157, 213)], [(157, 213)], on_stage=stages.append)
    assert stages == ["scores", "masks"]
