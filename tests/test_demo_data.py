"""The synthetic demo dataset: deterministic, valid COCO, annotations that match what was drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sparseinst_cli.data.demo_data import (
    DEMO_CLASSES,
    EMPTY_OFFSET,
    MIN_VISIBLE_AREA,
    DemoDataset,
    generate_demo_dataset,
    render_image,
    segmentation,
)
from sparseinst_cli.data.images import read_image

from .conftest import RecordingProgress

SIZE = (128, 160)  # (H, W): non-square, so swapped axes would show
MID_SET = 40  # images in a "mid-size" split: holds index EMPTY_OFFSET, hence one empty image


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def split_files(dataset: DemoDataset) -> tuple[bytes, bytes, list[np.ndarray]]:
    images = [read_image(p) for d in (dataset.train_dir, dataset.val_dir) for p in sorted(d.glob("*.png"))]
    return dataset.train_json.read_bytes(), dataset.val_json.read_bytes(), images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), train_images=MID_SET, val_images=4, size=SIZE)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    make = lambda name, seed: generate_demo_dataset(tmp_path / name, train_images=12, val_images=4, size=SIZE, seed=seed)
    first, second, other = map(split_files, (make("a", 0), make("b", 0), make("c", 1)))
    assert first[:2] == second[:2]
    assert len(first[2]) == len(second[2]) == 16
    assert all(np.array_equal(x, y) for x, y in zip(first[2], second[2]))
    assert first[0] != other[0] and first[1] != other[1]
    assert not any(np.array_equal(x, y) for x, y in zip(first[2], other[2]))


def test_splits_and_images_use_independent_streams() -> None:
    train, val, next_train = (render_image(0, s, i, SIZE).image for s, i in (("train", 0), ("val", 0), ("train", 1)))
    assert not np.array_equal(train, val)
    assert not np.array_equal(train, next_train)


def test_paths_counts_and_progress(tmp_path: Path) -> None:
    progress = RecordingProgress()
    ds = generate_demo_dataset(tmp_path, train_images=3, val_images=2, size=SIZE, progress=progress)
    assert progress.events == [("start", "demo-data", 5, 0), *(("advance", n) for n in range(1, 6)), ("stop",)]
    assert (ds.train_json, ds.val_json) == (tmp_path / "train.json", tmp_path / "val.json")
    assert sorted(p.name for p in ds.train_dir.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert sorted(p.name for p in ds.val_dir.iterdir()) == ["000000.png", "000001.png"]
    assert (ds.train_images, ds.val_images) == (3, 2)
    assert ds.train_instances == len(json.loads(ds.train_json.read_text())["annotations"]) > 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_decode_to_the_rendered_masks(dataset: DemoDataset, split: str) -> None:
    coco = COCO(str(dataset.root / f"{split}.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    assert coco.getCatIds() == [1, 2, 3, 4]
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        assert (info["height"], info["width"]) == SIZE
        index = int(info["file_name"].removesuffix(".png"))
        rendered = render_image(0, split, index, SIZE)
        assert np.array_equal(read_image(dataset.root / split / info["file_name"]), rendered.image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(rendered.masks)
        for ann, mask, label in zip(anns, rendered.masks, rendered.labels):
            assert ann["category_id"] == label + 1 and ann["iscrowd"] == 0
            assert iou(coco.annToMask(ann).astype(bool), mask) >= 0.9
            assert ann["area"] == mask.sum() >= MIN_VISIBLE_AREA
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_mid_size_split_has_an_empty_image_listed_without_annotations(dataset: DemoDataset) -> None:
    coco = json.loads(dataset.train_json.read_text())
    annotated = {a["image_id"] for a in coco["annotations"]}
    empty = [im["file_name"] for im in coco["images"] if im["id"] not in annotated]
    assert len(coco["images"]) == MID_SET
    assert empty == [f"{EMPTY_OFFSET:06d}.png"]


def test_shapes_include_small_and_occluded_instances() -> None:
    rendered = [render_image(0, "train", i, SIZE) for i in range(MID_SET)]
    visible = np.concatenate([r.masks.sum(axis=(1, 2)) for r in rendered])
    full = np.concatenate([r.shape_areas for r in rendered])
    labels = np.concatenate([r.labels for r in rendered])
    assert (visible < 400).sum() >= 5
    assert (visible < full).sum() >= 3
    assert (visible <= full).all()
    assert set(labels.tolist()) == set(range(len(DEMO_CLASSES)))


def test_plain_masks_become_polygons_that_rasterize_back_exactly() -> None:
    mask = np.zeros(SIZE, bool)
    mask[10:20, 30:45] = True
    mask[50:53, 5:9] = True  # a second, tiny piece
    polygons = segmentation(mask)
    assert isinstance(polygons, list) and len(polygons) == 2
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, *SIZE))).astype(bool)
    assert np.array_equal(drawn, mask)


def test_masks_with_holes_become_rle() -> None:
    mask = np.zeros(SIZE, bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False
    rle = segmentation(mask)
    assert isinstance(rle, dict) and isinstance(rle["counts"], str) and rle["size"] == list(SIZE)
    assert np.array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), mask)
