"""COCO instance datasets, training augmentation and batch collation."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sparseinst_cli.data.coco import encode_rle
from sparseinst_cli.data.datasets import CocoInstances, ImageInfo, Sample
from sparseinst_cli.data.images import write_image
from sparseinst_cli.data.transforms import (
    Collate,
    TrainingSet,
    TrainSample,
    TrainTransform,
    collate,
    random_crop,
    resize,
)
from sparseinst_cli.errors import DatasetError, ImageError
from sparseinst_cli.recipe import AugmentationSection, InputSection

from .conftest import COCO_SIZE, RECT, ann, make_coco

H, W = COCO_SIZE


def rect_mask(top: int, left: int, bottom: int, right: int, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


# ------------------------------------------------------------------------------------- reading


def test_segmentation_forms_decode_to_the_exact_pixels(tmp_path: Path) -> None:
    square = rect_mask(12, 40, 20, 55)
    blob = rect_mask(30, 2, 38, 9) | rect_mask(0, 0, 3, 4)
    json_path, folder = make_coco(tmp_path, annotations=[
        ann(1, [RECT]),
        ann(2, uncompressed_rle(square)),
        ann(3, encode_rle(blob)),
        ann(4, [[0, 0, 4, 0, 4, 3, 0, 3], [50, 30, 58, 30, 58, 38, 50, 38]]),  # two polygons, one instance
    ])
    dataset = CocoInstances(json_path, folder)
    sample = dataset.load(0)
    assert sample.masks.shape == (4, H, W) and sample.masks.dtype == np.uint8
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    assert sample.labels.tolist() == [0, 0, 0, 0] and sample.labels.dtype == np.int64
    assert (sample.image_id, sample.file_name) == (1, "a.png")
    assert np.array_equal(sample.masks[0], rect_mask(5, 10, 25, 30))  # 400 pixels
    assert sample.masks[0].sum() == 400
    assert np.array_equal(sample.masks[1], square)
    assert np.array_equal(sample.masks[2], blob)
    assert sample.masks[3].sum() == 4 * 3 + 8 * 8
    assert dataset.image_info(0) == ImageInfo(1, "a.png", H, W)
    assert dataset.summary.problems() == []


def test_crowd_excluded_and_counted_empty_image_kept(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "b.png", "height": 30, "width": 20}]
    json_path, folder = make_coco(tmp_path, images, [
        ann(1, [RECT]),
        ann(2, encode_rle(rect_mask(0, 0, 10, 10)), iscrowd=1),
        ann(3, [RECT], iscrowd=1),
    ])
    dataset = CocoInstances(json_path, folder)
    assert len(dataset) == 2
    assert len(dataset.load(0).masks) == 1
    empty = dataset.load(1)
    assert empty.masks.shape == (0, 30, 20) and empty.labels.shape == (0,)
    summary = dataset.summary
    assert (summary.images, summary.annotations, summary.crowd, summary.empty_images) == (2, 1, 2, 1)
    assert str(summary) == "2 images (1 without instances), 1 instances; left out: 2 crowd, 0 images, 0 annotations"


def test_non_contiguous_category_ids_map_in_ascending_order(tmp_path: Path) -> None:
    categories = [{"id": 12, "name": "cup"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    json_path, folder = make_coco(tmp_path, annotations=[
        ann(1, [RECT], category_id=12), ann(2, [RECT], category_id=3), ann(3, [RECT], category_id=7),
    ], categories=categories)
    dataset = CocoInstances(json_path, folder)
    assert dataset.class_names == ("cat", "dog", "cup")
    assert dataset.categories == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "cup"}]
    assert dataset.load(0).labels.tolist() == [2, 0, 1]


MALFORMED = [
    (ann(10, [RECT], category_id=99), "unknown category id 99"),
    (ann(11, [[1, 2, 3, 4]]), "polygon with fewer than 6 coordinates (4)"),
    (ann(12, [[1, 2, 3, 4, 5, 6, 7]]), "polygon with an odd number of coordinates (7)"),
    (ann(13, [["a", 2, 3, 4, 5, 6]]), "polygons must be lists of numbers"),
    (ann(14, []), "segmentation is empty"),
    (ann(15, "oops"), "segmentation is neither polygons nor RLE"),
    (ann(16, {"size": [H + 1, W], "counts": [0, (H + 1) * W]}),
     f"RLE size [{H + 1}, {W}] disagrees with the image ({H}x{W})"),
    (ann(17, {"size": [H, W], "counts": [5, 10]}), f"RLE counts cover 15 pixels, not {H}x{W} = {H * W}"),
    (ann(18, {"size": [H, W], "counts": "1a"}), "RLE counts are not a valid compressed RLE string"),
    (ann(19, {"counts": [H * W]}), "RLE needs 'size' and 'counts'"),
    ({"id": 20, "image_id": 1, "segmentation": [RECT]}, "missing 'category_id'"),
    (ann(21, [RECT], image_id=77), "image id 77 not in images"),
]


def test_malformed_annotations_are_skipped_with_their_reason(tmp_path: Path) -> None:
    json_path, folder = make_coco(tmp_path, annotations=[ann(1, [RECT])] + [entry for entry, _ in MALFORMED])
    dataset = CocoInstances(json_path, folder)
    assert len(dataset.load(0).masks) == 1
    reasons = {issue.name: issue.reason for issue in dataset.summary.skipped_annotations}
    for entry, reason in MALFORMED:
        name = f"annotation {entry['id']}" + ("" if entry["image_id"] == 77 else " (image 'a.png')")
        assert reasons[name] == reason
    assert len(reasons) == len(MALFORMED)
    assert "skipped annotation 10 (image 'a.png'): unknown category id 99" in dataset.summary.problems()


@pytest.mark.parametrize(("entry", "reason"), MALFORMED[:3] + MALFORMED[-1:])
def test_malformed_annotation_under_strict_raises_naming_it(tmp_path: Path, entry: dict, reason: str) -> None:
    json_path, folder = make_coco(tmp_path, annotations=[entry])
    with pytest.raises(DatasetError, match=rf"instances.json: annotation {entry['id']}\b.*: {re.escape(reason)}"):
        CocoInstances(json_path, folder, strict=True)


def test_missing_image_file_is_skipped_or_raises_under_strict(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "gone.png", "height": H, "width": W}]
    json_path, folder = make_coco(tmp_path, images, [ann(1, [RECT], image_id=2)])
    (folder / "gone.png").unlink()
    dataset = CocoInstances(json_path, folder)
    assert len(dataset) == 1 and dataset.image_info(0).file_name == "a.png"
    assert dataset.summary.problems() == [f"skipped image 'gone.png': file not found: {folder / 'gone.png'}"]
    assert dataset.summary.skipped_annotations == []  # its annotations go with it
    with pytest.raises(DatasetError, match="instances.json: image 'gone.png': file not found"):
        CocoInstances(json_path, folder, strict=True)


def test_corrupt_image_raises_image_error_naming_the_file(tmp_path: Path) -> None:
    json_path, folder = make_coco(tmp_path)
    (folder / "a.png").write_bytes(b"not a png at all")
    dataset = CocoInstances(json_path, folder)  # existence only is checked up front
    with pytest.raises(ImageError, match="a.png: not a readable image"):
        dataset.load(0)


def test_image_whose_size_disagrees_with_the_json(tmp_path: Path) -> None:
    json_path, folder = make_coco(tmp_path)
    write_image(folder / "a.png", np.zeros((H, W + 2, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match=f"a.png: image is {H}x{W + 2} but instances.json says {H}x{W}"):
        CocoInstances(json_path, folder).load(0)


def test_files_that_stop_the_run(tmp_path: Path) -> None:
    json_path, folder = make_coco(tmp_path)
    with pytest.raises(DatasetError, match="nope.json: no such annotations file"):
        CocoInstances(tmp_path / "nope.json", folder)
    with pytest.raises(DatasetError, match="no such image folder"):
        CocoInstances(json_path, tmp_path / "no_folder")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match="bad.json: not valid JSON"):
        CocoInstances(bad, folder)
    bad.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="bad.json: not a COCO instances file"):
        CocoInstances(bad, folder)
    bad.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DatasetError, match="bad.json: no categories"):
        CocoInstances(bad, folder)
    bad.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}')
    with pytest.raises(DatasetError, match="bad.json: no usable images"):
        CocoInstances(bad, folder)


def test_all_images_missing_is_an_empty_dataset(tmp_path: Path) -> None:
    json_path, folder = make_coco(tmp_path, write=False)
    with pytest.raises(DatasetError, match="instances.json: no usable images .*a.png.*file not found"):
        CocoInstances(json_path, folder)


def test_dataset_pickles_for_workers(tmp_path: Path) -> None:
    import pickle

    json_path, folder = make_coco(tmp_path, annotations=[ann(1, [RECT])])
    copy = pickle.loads(pickle.dumps(CocoInstances(json_path, folder)))
    assert copy.load(0).masks.sum() == 400


# ---------------------------------------------------------------------------------- transforms


def sample_with_masks(height: int = H, width: int = W) -> Sample:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    corner = rect_mask(height - 4, width - 4, height, width, height, width)
    masks = np.stack([rect_mask(5, 10, 25, 30, height, width), corner])
    return Sample(image, masks, np.array([0, 1], dtype=np.int64), 7, "x.png")


def augmentation(**changes) -> AugmentationSection:
    return AugmentationSection(**{"min_sizes": (32, 48, 64), "max_size": 100, **changes})


def test_same_seed_same_sample_different_seeds_differ() -> None:
    transform = TrainTransform(augmentation(crop=True, crop_size_range=(20, 36)))
    sample = sample_with_masks()
    first = transform(sample, np.random.default_rng(5))
    again = transform(sample, np.random.default_rng(5))
    for a, b in zip(first[:3], again[:3]):
        assert torch.equal(a, b)
    others = [transform(sample, np.random.default_rng(seed)) for seed in range(6, 12)]
    assert any(o.image.shape != first.image.shape or not torch.equal(o.image, first.image) for o in others)


def test_flip_mirrors_image_and_masks() -> None:
    sample = sample_with_masks()
    plain = TrainTransform(augmentation(min_sizes=(H,), flip=False))(sample, np.random.default_rng(0))
    flipper = TrainTransform(augmentation(min_sizes=(H,), flip=True))
    flips = {}
    for seed in range(20):
        out = flipper(sample, np.random.default_rng(seed))
        flips[torch.equal(out.image, plain.image.flip(-1))] = out
    assert set(flips) == {True, False}  # both outcomes happen
    flipped = flips[True]
    assert torch.equal(flipped.masks, plain.masks.flip(-1))
    assert torch.equal(plain.image, torch.from_numpy(sample.image).permute(2, 0, 1))  # same size: untouched
    assert flipped.masks[0, 5:25, W - 30 : W - 10].all() and flipped.masks[0].sum() == 400


def test_resize_shorter_side_from_min_sizes_longer_capped() -> None:
    sample = sample_with_masks()  # 40 x 60
    transform = TrainTransform(augmentation(min_sizes=(32, 48, 64), max_size=100, flip=False))
    shapes = {tuple(transform(sample, np.random.default_rng(seed)).image.shape[1:]) for seed in range(30)}
    assert shapes == {(32, 48), (48, 72), (64, 96)}
    capped = TrainTransform(augmentation(min_sizes=(64,), max_size=80))(sample, np.random.default_rng(0))
    assert tuple(capped.image.shape[1:]) == (53, 80)  # detectron2: 64 * 80 / 96 = 53.3 -> 53
    out = TrainTransform(augmentation(min_sizes=(80,), max_size=1000, flip=False))(sample, np.random.default_rng(0))
    assert out.masks.shape == (2, 80, 120) and out.masks.dtype == torch.uint8
    assert torch.equal(out.masks[0], torch.from_numpy(rect_mask(10, 20, 50, 60, 80, 120)))  # exact 2x nearest
    assert out.labels.tolist() == [0, 1] and out.image_id == 7 and out.skipped == ()


def test_instances_that_vanish_are_dropped() -> None:
    masks = np.zeros((3, 200, 300), dtype=np.uint8)
    masks[0, 50:150, 50:150] = 1
    masks[1, 101, 101] = 1  # one pixel that the 10x shrink does not sample (it samples 5, 15, ...)
    masks[2, 105, 105] = 1  # one pixel that it does
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    sample = Sample(image, masks, np.array([0, 1, 2]), 7, "x.png")
    out = TrainTransform(augmentation(min_sizes=(20,), flip=False))(sample, np.random.default_rng(0))
    assert out.labels.tolist() == [0, 2] and out.masks.shape == (2, 20, 30)
    assert out.masks[0].sum() == 100 and out.masks[1, 10, 10] == 1


def test_crop_size_within_range() -> None:
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    masks = np.zeros((1, 300, 400), dtype=np.uint8)
    rng = np.random.default_rng(0)
    sizes = np.array([random_crop(image, masks, (100, 150), rng)[1].shape[1:] for _ in range(500)])
    assert sizes.min() == 100 and sizes.max() == 150  # both ends reachable, nothing outside
    image[5, 7] = 255
    cropped = random_crop(image, masks, (500, 600), rng)[0]
    assert cropped.shape == (300, 400, 3) and cropped[5, 7, 0] == 255  # clipped to the image
    heights, widths = zip(*(random_crop(image, masks, (250, 350), rng)[0].shape[:2] for _ in range(100)))
    assert max(heights) == 300 and min(heights) >= 250 and max(widths) <= 350  # like detectron2's absolute_range


def test_crop_drops_instances_cropped_out() -> None:
    sample = sample_with_masks(300, 400)
    sample.masks[1] = 0
    sample.masks[1, 0:8, 0:8] = 1  # a corner instance most crops leave out
    transform = TrainTransform(augmentation(
        crop=True, crop_prob=1.0, crop_resize_sizes=(300,), crop_size_range=(100, 150),
        min_sizes=(120,), max_size=1000, flip=False,
    ))
    kept = []
    for seed in range(15):
        out = transform(sample, np.random.default_rng(seed))
        assert min(out.image.shape[1:]) == 120 and max(out.image.shape[1:]) <= 180
        assert len(out.labels) == len(out.masks) and all(m.any() for m in out.masks)
        kept.append(out.labels.tolist())
    assert [0] in kept or [] in kept  # the corner instance (label 1) is cropped out


def test_crop_window_clipped_to_small_images() -> None:
    sample = sample_with_masks(40, 60)
    transform = TrainTransform(augmentation(
        crop=True, crop_prob=1.0, crop_resize_sizes=(40,), crop_size_range=(384, 600),
        min_sizes=(40,), flip=False,
    ))
    out = transform(sample, np.random.default_rng(0))
    assert torch.equal(out.image, torch.from_numpy(sample.image).permute(2, 0, 1))  # the whole image


# ------------------------------------------------------------------------ training set, collate


def test_training_set_substitutes_unreadable_images(tmp_path: Path) -> None:
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)]
    json_path, folder = make_coco(tmp_path, images, [ann(1, [RECT], image_id=2)])
    (folder / "1.png").write_bytes(b"\x89PNG garbage")
    transform = TrainTransform(augmentation(min_sizes=(H,), flip=False))
    training = TrainingSet(CocoInstances(json_path, folder), transform)
    out = training[(0, 123)]
    assert out.image_id == 2 and len(out.skipped) == 1 and "1.png: not a readable image" in out.skipped[0]
    assert out.masks[0].sum() == 400
    assert training[(1, 123)].skipped == ()
    with pytest.raises(ImageError, match="1.png"):
        TrainingSet(CocoInstances(json_path, folder), transform, strict=True)[(0, 123)]
    for name in ("2.png", "3.png"):
        (folder / name).write_bytes(b"")
    with pytest.raises(ImageError, match="3 images in a row are unreadable"):
        training[(0, 1)]


def test_collate_pads_to_multiples_of_32_after_normalization() -> None:
    samples = [
        TrainSample(torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8), torch.zeros(2, 40, 70, dtype=torch.uint8),
                    torch.tensor([1, 0]), 5),
        TrainSample(torch.randint(0, 256, (3, 65, 33), dtype=torch.uint8), torch.zeros(0, 65, 33, dtype=torch.uint8),
                    torch.zeros(0, dtype=torch.int64), 6, ("bad.png: unreadable",)),
    ]
    samples[0].masks[0, 39, 69] = 1
    samples[0].masks[1, 3:9, 50:60] = 1
    spec = InputSection()
    batch = Collate(spec)(samples)
    assert batch.images.shape == (2, 3, 96, 96) and batch.images.dtype == torch.float32
    assert [m.shape for m in batch.masks] == [(2, 96, 96), (0, 96, 96)]
    assert batch.image_sizes == [(40, 70), (65, 33)] and batch.image_ids == [5, 6]
    assert batch.skipped == ("bad.png: unreadable",)
    mean, std = torch.tensor(spec.pixel_mean).view(3, 1, 1), torch.tensor(spec.pixel_std).view(3, 1, 1)
    assert torch.allclose(batch.images[0, :, :40, :70], (samples[0].image.float() - mean) / std)
    assert torch.allclose(batch.images[1, :, :65, :33], (samples[1].image.float() - mean) / std)
    assert batch.images[0, :, 40:].abs().sum() == 0 and batch.images[0, :, :, 70:].abs().sum() == 0
    assert batch.images[1, :, 65:].abs().sum() == 0 and batch.images[1, :, :, 33:].abs().sum() == 0
    assert torch.equal(batch.masks[0][:, :40, :70], samples[0].masks) and batch.masks[0].sum() == 61
    assert batch.labels[0].tolist() == [1, 0]
    moved = batch.to("cpu")
    assert torch.equal(moved.images, batch.images) and moved.image_ids == [5, 6]


def test_pipeline_keeps_image_and_masks_aligned(tmp_path: Path) -> None:
    """From files to a padded batch: the instance's pixels are where its colour was painted."""
    json_path, folder = make_coco(tmp_path, annotations=[ann(1, [RECT])])
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[5:25, 10:30] = (200, 100, 50)
    write_image(folder / "a.png", image)
    transform = TrainTransform(augmentation(min_sizes=(80,), max_size=1000))
    training = TrainingSet(CocoInstances(json_path, folder), transform)
    spec = InputSection()
    batch = collate([training[(0, seed)] for seed in range(4)], spec.pixel_mean, spec.pixel_std, 32)
    assert batch.images.shape == (4, 3, 96, 128)
    # Red 200 on black: linear upsampling puts the 50% level exactly on the nearest-neighbour mask's edge.
    painted = batch.images[:, 0] > (100 - spec.pixel_mean[0]) / spec.pixel_std[0]
    for b in range(4):
        assert batch.image_sizes[b] == (80, 120)
        assert torch.equal(painted[b, :80, :120], batch.masks[b][0, :80, :120].bool())
        assert batch.masks[b][0].sum() == 1600 and batch.masks[b][0, 80:].sum() == batch.masks[b][0, :, 120:].sum() == 0


# ------------------------------------------------------------- polygons drawn at the training size

STAR = [[30.0, 4.0, 35.0, 22.0, 54.0, 22.0, 39.0, 33.0, 44.0, 51.0, 30.0, 40.0, 16.0, 51.0, 21.0, 33.0, 6.0, 22.0,
         25.0, 22.0]]  # a five-pointed star, concave, in a 60 x 80 image
SPECK = [[61.0, 10.0, 66.5, 11.0, 64.0, 15.5]]  # a 5-pixel triangle


def polygon_sample(segmentations: list) -> Sample:
    height, width = 60, 80
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    from sparseinst_cli.data.datasets import decode_masks

    masks = decode_masks(segmentations, height, width)
    polygons = tuple(s if isinstance(s, list) else None for s in segmentations)
    return Sample(image, masks, np.arange(len(segmentations), dtype=np.int64), 3, "p.png", polygons)


def drawn(parts: list[list[float]], height: int, width: int, map_x, map_y) -> np.ndarray:
    """The polygon with each vertex moved by (map_x, map_y), rasterized by pycocotools at (height, width)."""
    moved = [[value for x, y in zip(part[::2], part[1::2]) for value in (map_x(x), map_y(y))] for part in parts]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(moved, height, width)))


def test_polygons_are_drawn_at_the_training_size() -> None:
    """Upscaled 2.5x and shrunk 0.4x: exactly pycocotools' drawing of the scaled polygons (as
    detectron2 makes its targets); the nearest-neighbour resize of the original mask differs."""
    sample = polygon_sample([STAR, SPECK])
    for short, size in ((150, (150, 200)), (24, (24, 32))):
        out = TrainTransform(augmentation(min_sizes=(short,), max_size=1000, flip=False))(
            sample, np.random.default_rng(0))
        assert tuple(out.image.shape[1:]) == size
        sx, sy = size[1] / 80, size[0] / 60
        for k, parts in enumerate((STAR, SPECK)):
            expected = drawn(parts, *size, lambda x: x * sx, lambda y: y * sy)
            assert np.array_equal(out.masks[k].numpy(), expected), (short, k)
        nearest = resize(sample.image, sample.masks, size)[1]
        assert not np.array_equal(nearest[0], out.masks[0].numpy())  # what the targets were before


def test_flipped_and_cropped_polygons_are_drawn_from_moved_vertices() -> None:
    sample = polygon_sample([STAR])
    flipped = None
    for seed in range(10):
        out = TrainTransform(augmentation(min_sizes=(60,), max_size=1000, flip=True))(sample, np.random.default_rng(seed))
        if not torch.equal(out.image, torch.from_numpy(sample.image).permute(2, 0, 1)):
            flipped = out
            break
    assert flipped is not None
    expected = drawn(STAR, 60, 80, lambda x: 80 - x, lambda y: y)  # mirrored vertices, drawn
    assert np.array_equal(flipped.masks[0].numpy(), expected)
    # A crop cuts the star: the vertices are clipped to the window, then drawn.
    transform = TrainTransform(augmentation(min_sizes=(60,), max_size=1000, flip=False, crop=True, crop_prob=1.0,
                                            crop_resize_sizes=(60,), crop_size_range=(30, 30)))
    out = transform(sample, np.random.default_rng(3))
    assert tuple(out.image.shape[1:]) == (60, 60)
    top, left = locate(out.image.permute(1, 2, 0).numpy(), sample.image)
    reference = drawn(STAR, 240, 320, lambda x: x * 4, lambda y: y * 4)  # 4x finer, then the same window
    window = reference[top * 4:(top + 30) * 4, left * 4:(left + 30) * 4]
    coverage = window.reshape(30, 4, 30, 4).mean(axis=(1, 3))
    resized_coverage = cv2.resize(coverage.astype(np.float32), (60, 60), interpolation=cv2.INTER_LINEAR)
    agree = (out.masks[0].numpy() == (resized_coverage >= 0.5)).mean()
    assert out.masks[0].sum() > 0 and agree > 0.97


def locate(crop: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """Where a 30 x 30 window, shown 2x, was cut from the image: the offset that matches best."""
    small = cv2.resize(crop, (30, 30), interpolation=cv2.INTER_AREA).astype(np.int32)
    errors = {(t, s): np.abs(image[t:t + 30, s:s + 30].astype(np.int32) - small).mean()
              for t in range(image.shape[0] - 29) for s in range(image.shape[1] - 29)}
    return min(errors, key=errors.get)


def test_clipping_a_polygon_to_a_box() -> None:
    from sparseinst_cli.data.polygons import clip_to_box, crop

    square = np.array([[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]])
    clipped = clip_to_box(square, 10, 10)
    assert polygon_area(clipped) == pytest.approx(25.0)
    assert clipped.min() >= 0 and clipped.max() <= 10
    assert len(clip_to_box(square + 100, 10, 10)) == 0  # wholly outside: nothing left
    assert crop([square + 100], 0, 0, 10, 10) == []
    inside = np.array([[1.0, 1.0], [4.0, 1.0], [2.0, 3.0]])
    assert np.allclose(clip_to_box(inside, 10, 10), inside)  # wholly inside: unchanged
    star = np.asarray(STAR[0]).reshape(-1, 2)  # concave: cut at y = 30, the two pieces add up to the whole
    upper, lower = clip_to_box(star, 80, 30), clip_to_box(star - (0, 30), 80, 30)
    assert polygon_area(upper) + polygon_area(lower) == pytest.approx(polygon_area(star))
    assert upper[:, 1].max() == pytest.approx(30.0) and 0 < polygon_area(lower) < polygon_area(upper)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def test_rle_masks_keep_the_nearest_neighbour_resize() -> None:
    rle = mask_utils.encode(np.asfortranarray(rect_mask(10, 20, 30, 50, 60, 80)))
    rle["counts"] = rle["counts"].decode()
    sample = polygon_sample([rle, STAR])
    assert sample.polygons == (None, STAR)
    out = TrainTransform(augmentation(min_sizes=(24,), max_size=1000, flip=False))(sample, np.random.default_rng(0))
    assert np.array_equal(out.masks[0].numpy(), resize(sample.image, sample.masks, (24, 32))[1][0])
