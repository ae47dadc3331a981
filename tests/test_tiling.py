"""Tiled inference: the tile geometry, merging across seams (a stand-in model that finds coloured
regions exactly, so a seam's effect is exact), more tiny objects found with tiles than without,
the whole-image pass, a real model's path and the command line."""

from __future__ import annotations

import itertools
import json
import typing
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from components import Instances
from components.postprocess import masks_to_boxes
from sparseinst_cli.cli.app import app
from sparseinst_cli.cli.commands.predict import predict
from sparseinst_cli.data.images import as_rgb_array, write_image
from sparseinst_cli.errors import SparseInstError
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.inference.results import Prediction
from sparseinst_cli.inference.tiling import (
    DEFAULT_OVERLAP,
    MIN_TILE,
    Piece,
    Tile,
    check_tiling,
    merge_pieces,
    predict_tiled,
    tile_grid,
)

from .conftest import random_checkpoint, write_clip

RED, BLUE = (230, 40, 40), (40, 90, 230)  # the stand-in's classes 0 and 1, by colour
BACKGROUND = 120
CATEGORIES = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
MODEL_SIDE = 256  # the stand-in resizes its input's long side to this, like the real model's test size
MIN_FOUND_AREA = 40  # pixels after that resize: smaller regions are not found
SCORE = 0.9
TILE = 256
SAME_MASK_IOU = 0.95


class ColourModel:
    """A stand-in for ``Predictor``: each connected region of a class colour is an instance with
    its exact mask, found when it covers at least ``MIN_FOUND_AREA`` pixels once the input is
    resized to ``MODEL_SIDE`` on its long side. A region touching two opposite sides of its input
    fills the view from side to side and is not found (no object without context). With
    ``cut_class``, a region touching its input's edge is named that class (a part seen without
    its context, misnamed)."""

    categories = CATEGORIES

    def __init__(self, cut_class: int | None = None) -> None:
        self.cut_class = cut_class
        self.calls = 0

    def predict(self, images: Sequence[np.ndarray], bgr: bool = False, conf: float | None = None) -> list[Prediction]:
        self.calls += 1
        return [self.predict_one(as_rgb_array(image, bgr)) for image in images]

    def predict_one(self, image: np.ndarray) -> Prediction:
        height, width = image.shape[:2]
        area_scale = (MODEL_SIDE / max(height, width)) ** 2
        masks, labels = [], []
        for label, colour in enumerate((RED, BLUE)):
            count, regions, stats, _ = cv2.connectedComponentsWithStats((image == colour).all(-1).astype(np.uint8))
            for region in range(1, count):
                x, y, w, h, area = stats[region]
                spans = (x == 0 and x + w == width) or (y == 0 and y + h == height)
                touches = x == 0 or y == 0 or x + w == width or y + h == height
                if area * area_scale >= MIN_FOUND_AREA and not spans:
                    masks.append(regions == region)
                    labels.append(self.cut_class if touches and self.cut_class is not None else label)
        masks = torch.from_numpy(np.array(masks, dtype=bool).reshape(-1, height, width))
        instances = Instances(masks, torch.full((len(labels),), SCORE), torch.tensor(labels, dtype=torch.int64),
                              masks_to_boxes(masks), (height, width))
        return Prediction.of(instances, CATEGORIES, image)


def blank(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), BACKGROUND, np.uint8)


def drawn(image: np.ndarray, colour: tuple[int, int, int]) -> torch.Tensor:
    """Where ``image`` has ``colour``: (H, W) bool."""
    return torch.from_numpy((image == colour).all(-1))


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("size", [(1000, 700), (512, 512), (300, 1200), (256, 256), (200, 900), (257, 513)])
@pytest.mark.parametrize("overlap", [0.0, DEFAULT_OVERLAP, 0.5])
def test_tiles_cover_the_image_share_the_overlap_and_stay_inside(size: tuple[int, int], overlap: float) -> None:
    height, width = size
    tiles = tile_grid(height, width, TILE, overlap)
    covered = np.zeros(size, bool)
    for tile in tiles:
        assert 0 <= tile.top < tile.bottom <= height and 0 <= tile.left < tile.right <= width
        assert (tile.bottom - tile.top, tile.right - tile.left) == (min(TILE, height), min(TILE, width))
        covered[tile.top:tile.bottom, tile.left:tile.right] = True
    assert covered.all()
    for side, starts in (("left", sorted({t.left for t in tiles})), ("top", sorted({t.top for t in tiles}))):
        shared = [TILE - (b - a) for a, b in itertools.pairwise(starts)]
        assert all(s >= round(TILE * overlap) for s in shared), (side, starts)
        assert all(s == round(TILE * overlap) for s in shared[:-1]), (side, starts)  # only the last is shifted
    if height <= TILE and width <= TILE:
        assert tiles == [Tile(0, 0, height, width)]


@pytest.mark.parametrize(("tile", "overlap", "setting"), [(TILE, 1.0, "overlap"), (TILE, -0.1, "overlap"),
                                                         (MIN_TILE - 1, DEFAULT_OVERLAP, "tile")])
def test_bad_tiling_is_refused_in_one_line(tile: int, overlap: float, setting: str) -> None:
    with pytest.raises(SparseInstError) as error:
        check_tiling(tile, overlap)
    assert error.value.setting == setting and "\n" not in str(error.value)


def test_an_image_not_larger_than_a_tile_is_predicted_whole() -> None:
    image = blank(200, TILE)
    cv2.circle(image, (100, 100), 30, RED, -1)
    model = ColourModel()
    tiled = predict_tiled(model, image, tile=TILE)
    whole = model.predict([image])[0]
    assert model.calls == 2 and len(tiled) == len(whole) == 1
    assert torch.equal(tiled.masks, whole.masks) and tiled.image_size == whole.image_size


# ------------------------------------------------------------------ merging at the seams


@pytest.mark.parametrize("full_image", [False, True])
def test_an_object_cut_by_seams_comes_back_as_one_instance(full_image: bool) -> None:
    image = blank(512, 512)  # tiles start at 0, 205 and 256 on each side: the seams cut x = 186..326
    cv2.circle(image, (256, 128), 70, RED, -1)  # wider than the shared strip: no tile sees it whole
    cv2.rectangle(image, (230, 300), (249, 319), BLUE, -1)  # inside a strip: seen whole by two tiles
    model = ColourModel()
    prediction = predict_tiled(model, image, tile=TILE, overlap=DEFAULT_OVERLAP, full_image=full_image)
    assert prediction.image_size == (512, 512) and sorted(prediction.names) == ["blue", "red"]
    red = prediction.masks[prediction.labels == 0][0]
    blue = prediction.masks[prediction.labels == 1][0]
    assert iou(red, drawn(image, RED)) >= SAME_MASK_IOU and iou(blue, drawn(image, BLUE)) >= SAME_MASK_IOU
    assert torch.equal(prediction.boxes, masks_to_boxes(prediction.masks))
    assert prediction.image is not None and prediction.image.shape == image.shape
    assert prediction.categories == CATEGORIES and prediction.scores.tolist() == pytest.approx([SCORE, SCORE])
    assert model.calls == -(-9 // 4) + full_image  # 9 tiles, 4 a forward, then the whole image


def test_a_part_seen_without_context_and_misnamed_does_not_survive_as_a_duplicate() -> None:
    image = blank(512, 512)
    cv2.circle(image, (265, 128), 35, RED, -1)  # x = 230..300: whole in the tile from 205, cut by the others
    prediction = predict_tiled(ColourModel(cut_class=1), image, tile=TILE, full_image=False)
    assert prediction.names == ["red"]
    assert iou(prediction.masks[0], drawn(image, RED)) >= SAME_MASK_IOU


def test_two_instances_found_whole_in_one_tile_stay_two() -> None:
    """A part cut by its tile links to both (seam rule); one group may hold one of them only."""
    windows = [Tile(0, 0, 100, 100), Tile(0, 80, 100, 180)]

    def piece(top: int, left: int, bottom: int, right: int, source: int, cut: bool) -> Piece:
        mask = torch.ones((bottom - top, right - left), dtype=torch.bool)
        return Piece(mask, top, left, SCORE, 0, source, cut, int(mask.sum()))

    pieces = [piece(10, 60, 30, 90, 0, False), piece(32, 60, 52, 90, 0, False), piece(10, 80, 52, 100, 1, True)]
    groups = merge_pieces(pieces, windows)
    assert sorted(map(sorted, groups)) in ([[0, 2], [1]], [[0], [1, 2]])


# ------------------------------------------------------------------ what tiles find


def tiny_objects_image(seed: int = 0) -> tuple[np.ndarray, int, int]:
    """A 1024x1024 image with 60 tiny red circles and 4 blue squares, one per cell of an 8x8
    grid; returns (image, tiny, large)."""
    rng = np.random.default_rng(seed)
    image = blank(1024, 1024)
    cell, jitter, radius, square = 128, 40, 6, 40
    large_cells = {9, 14, 49, 54}
    for index in range(64):
        row, column = divmod(index, 8)
        x, y = (cell * np.array([column, row]) + cell // 2 + rng.integers(-jitter, jitter + 1, 2)).tolist()
        if index in large_cells:
            cv2.rectangle(image, (x - square // 2, y - square // 2), (x + square // 2, y + square // 2), BLUE, -1)
        else:
            cv2.circle(image, (x, y), radius, RED, -1)
    return image, 64 - len(large_cells), len(large_cells)


def test_tiles_find_many_tiny_objects_that_the_whole_image_misses() -> None:
    image, tiny, large = tiny_objects_image()
    model = ColourModel()
    whole = model.predict([image])[0]
    tiled = predict_tiled(model, image, tile=TILE)
    assert (tiny, large) == (60, 4)
    assert whole.names.count("red") == 0 and whole.names.count("blue") == large
    assert tiled.names.count("red") == tiny and tiled.names.count("blue") == large  # each once: the seams merged
    objects = cv2.connectedComponents((image != BACKGROUND).any(-1).astype(np.uint8))[0] - 1
    assert len(tiled) == objects == tiny + large


def test_the_whole_image_pass_keeps_an_object_larger_than_a_tile_as_one() -> None:
    image = blank(1024, 1024)
    cv2.rectangle(image, (162, 162), (861, 861), RED, -1)  # tiles inside it see red from side to side: nothing
    truth = drawn(image, RED)
    with_whole = predict_tiled(ColourModel(), image, tile=TILE)
    assert len(with_whole) == 1 and iou(with_whole.masks[0], truth) >= SAME_MASK_IOU
    tiles_only = predict_tiled(ColourModel(), image, tile=TILE, full_image=False)
    assert len(tiles_only) > 1 and all(iou(mask, truth) < SAME_MASK_IOU for mask in tiles_only.masks)


# ------------------------------------------------------------------ a real model and the command line

REAL_SIZE = ["input.min_size_test=64", "input.max_size_test=64"]
IMAGE_SIZE = (200, 300)  # (height, width): 2 x 3 tiles of MIN_TILE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("tiling") / "model.safetensors", "demo", REAL_SIZE, seed=1)


@pytest.fixture
def large_image(tmp_path: Path) -> Path:
    image = blank(*IMAGE_SIZE)
    cv2.circle(image, (150, 100), 60, RED, -1)
    path = tmp_path / "large.png"
    write_image(path, image)
    return path


def test_a_real_predictor_gives_masks_of_the_original_size(checkpoint: Path, large_image: Path) -> None:
    predictor = Predictor.from_checkpoint(checkpoint)
    prediction = predict_tiled(predictor, large_image, tile=MIN_TILE, conf=0.0)
    assert len(prediction) > 0 and prediction.masks.shape[1:] == IMAGE_SIZE == prediction.image_size
    assert prediction.source == str(large_image) and prediction.categories == predictor.categories
    assert prediction.masks.flatten(1).any(1).all() and (prediction.scores[:-1] >= prediction.scores[1:]).all()
    assert torch.equal(prediction.boxes, masks_to_boxes(prediction.masks))


def test_the_command_line_writes_one_result_per_image_at_its_size(checkpoint: Path, large_image: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(large_image), "--weights", str(checkpoint), "--out", str(out),
                                   "--conf", "0", "--tile", str(MIN_TILE), "--overlap", "0.25"])
    assert run.exit_code == 0, run.output
    overlay = cv2.imread(str(out / "large.png"))
    assert overlay.shape[:2] == IMAGE_SIZE
    results = json.loads((out / "results.json").read_text())
    assert results and all(r["segmentation"]["size"] == list(IMAGE_SIZE) for r in results)
    instances = json.loads((out / "instances.json").read_text())
    assert [(i["height"], i["width"]) for i in instances["images"]] == [IMAGE_SIZE]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["tile"], summary["overlap"], summary["images"][0]["instances"]) == (MIN_TILE, 0.25, len(results))


@pytest.mark.parametrize(("arguments", "flag"), [
    (["--tile", str(MIN_TILE - 1)], "--tile"),
    (["--tile", str(MIN_TILE), "--overlap", "1"], "--overlap"),
    (["--overlap", "0.3"], "--overlap"),
    (["VIDEO", "--tile", str(MIN_TILE)], "--tile"),
])
def test_the_command_line_refuses_bad_tiling_in_one_line(checkpoint: Path, large_image: Path, tmp_path: Path,
                                                         arguments: list[str], flag: str) -> None:
    if arguments[0] == "VIDEO":
        inputs, arguments = [str(write_clip(tmp_path / "clip.mp4", frames=2))], arguments[1:]
    else:
        inputs = [str(large_image)]
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", *inputs, "--weights", str(checkpoint), "--out", str(out), *arguments])
    assert run.exit_code == 2, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], run.output
    assert not out.exists()


def test_the_help_states_the_library_defaults() -> None:
    hints = typing.get_type_hints(predict, include_extras=True)
    assert f"at least {MIN_TILE})" in hints["tile"].__metadata__[0].help
    assert f"[default: {DEFAULT_OVERLAP}]" in hints["overlap"].__metadata__[0].help
