"""viz-iam: the grid's layout, and that what it draws is the model's own activation maps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from components.postprocess import instance_scores, maskness
from sparseinst_cli.analysis.activation_maps import (
    CELL_WIDTH,
    COLORBAR_HEIGHT,
    GAP,
    LABEL_HEIGHT,
    MEAN_CELL,
    MIN_FIGURE_WIDTH,
    dataset_mean_maps,
    heat_overlay,
    image_figure,
    map_statistics,
    mean_maps_figure,
)
from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.cli.commands.viz_iam import parse_channels
from sparseinst_cli.data.datasets import CocoInstances
from sparseinst_cli.data.demo_data import generate_demo_dataset
from sparseinst_cli.data.images import read_image, write_image
from sparseinst_cli.errors import NothingToShow
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, shapes_image

GROUPS = 4  # r50_giam
SIZE = ["input.min_size_test=64", "input.max_size_test=64"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    recipe = load_recipe("r50_giam", [*SMALL_MODEL, *SIZE])
    return Predictor.from_recipe(recipe, seed=5)


def test_grid_layout_and_the_maps_are_the_models(predictor: Predictor) -> None:
    image = shapes_image(48, 64)
    figure = image_figure(predictor, image, top_k=3, conf=0.0)
    cell_h = round(48 * CELL_WIDTH / 64)
    assert figure.grid.shape == (3 * (LABEL_HEIGHT + cell_h) + COLORBAR_HEIGHT,
                                 (1 + GROUPS) * CELL_WIDTH + GROUPS * GAP, 3)
    assert figure.maps.shape == (3, GROUPS, cell_h, CELL_WIDTH)

    # The rows are the three best candidates by the post-processing score.
    batch = predictor.preprocess([image])
    output = predictor.forward(batch, return_maps=True)
    scores, _ = instance_scores(output.logits, output.objectness)
    scores = scores[0] * maskness(output.masks.sigmoid())[0]
    assert figure.candidates == scores.topk(3).indices.tolist()
    np.testing.assert_allclose(figure.scores, scores.topk(3).values.numpy(), rtol=1e-5)

    # Each drawn map, averaged back onto the model's stride-8 grid, is the model's map there.
    # The 48x64 image keeps its size (longer side capped at 64) and is padded to 64x64: the maps
    # are 8x8, of which the image covers the top 6x8.
    raw = output.maps[0, figure.candidates]  # (3, G, 8, 8)
    for row in range(3):
        for group in range(GROUPS):
            drawn = figure.maps[row, group][None, None]
            back = F.adaptive_avg_pool2d(drawn, (6, 8))[0, 0].flatten()
            model = raw[row, group, :6].flatten()
            assert torch.corrcoef(torch.stack([back, model]))[0, 1] > 0.95
            # and the grid cell is that map over the image, on the scale shared by every map drawn
            top, left = row * (LABEL_HEIGHT + cell_h) + LABEL_HEIGHT, (1 + group) * (CELL_WIDTH + GAP)
            cell = figure.grid[top: top + cell_h, left: left + CELL_WIDTH]
            resized = cv2.resize(image, (CELL_WIDTH, cell_h), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(cell, heat_overlay(resized, figure.maps[row, group].numpy(), figure.scale))
    assert figure.scale.high == pytest.approx(float(figure.maps.max()))


def test_nothing_above_the_threshold(predictor: Predictor) -> None:
    with pytest.raises(NothingToShow, match="lower the confidence threshold"):
        image_figure(predictor, shapes_image(48, 64), conf=0.999)


def test_dataset_mean_maps(predictor: Predictor, tmp_path: Path) -> None:
    data = generate_demo_dataset(tmp_path / "demo", train_images=1, val_images=3, size=(64, 64))
    dataset = CocoInstances(data.val_json, data.val_dir)
    means, used, failures = dataset_mean_maps(predictor, dataset, [0, 3, 9])
    assert means.shape == (3, GROUPS, MEAN_CELL, MEAN_CELL) and used == 3 and failures == []
    torch.testing.assert_close(means.sum((-2, -1)), torch.ones(3, GROUPS))  # still distributions

    # The mean over three images is the mean of the three one-image means.
    singles = []
    for i in range(3):
        batch = predictor.preprocess([dataset.load(i).image])
        maps = predictor.forward(batch, return_maps=True).maps[0, [0, 3, 9]]  # 64x64 input: no padding, 8x8
        square = F.interpolate(maps.flatten(0, 1)[:, None], size=(64, 64), mode="bilinear", align_corners=False)
        square = F.interpolate(square, size=(MEAN_CELL, MEAN_CELL), mode="bilinear", align_corners=False)
        square = square.reshape(3, GROUPS, MEAN_CELL, MEAN_CELL).clamp(min=0)
        singles.append(square / square.sum((-2, -1), keepdim=True))
    torch.testing.assert_close(means, torch.stack(singles).mean(0), atol=1e-6, rtol=1e-4)

    grid = mean_maps_figure(means, [0, 3, 9])  # 3 cells: narrower than the colour bar's label
    assert grid.shape == (LABEL_HEIGHT + MEAN_CELL + COLORBAR_HEIGHT, MIN_FIGURE_WIDTH, 3)
    per_group = mean_maps_figure(means, [0, 3, 9], per_group=True)  # 12 cells: 2 rows of 10
    assert per_group.shape == (2 * (LABEL_HEIGHT + MEAN_CELL) + COLORBAR_HEIGHT, 10 * (MEAN_CELL + GAP) - GAP, 3)


def test_map_statistics_of_a_known_map() -> None:
    means = torch.zeros(1, 1, 4, 4)
    means[0, 0, 0, 3] = 1.0  # all mass in the top-right cell, whose centre is (0.875, 0.125)
    assert map_statistics(means, [7]) == [{"channel": 7, "center_x": 0.875, "center_y": 0.125, "spread": 0.0}]


def test_parse_channels() -> None:
    assert parse_channels("0-2,5") == [0, 1, 2, 5]
    assert parse_channels(" 7 ") == [7]
    assert parse_channels(None) is None


def test_viz_iam_command(predictor: Predictor, tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path / "model.safetensors", predictor.model, predictor.recipe, predictor.categories)
    image = tmp_path / "a.png"
    write_image(image, shapes_image(48, 64))
    runner = CliRunner()
    out = tmp_path / "fig.png"
    run = runner.invoke(app, ["viz-iam", str(image), "--weights", str(weights), "--out", str(out),
                              "--top-k", "2", "--conf", "0"])
    assert run.exit_code == 0, run.output
    assert read_image(out).shape == (2 * (LABEL_HEIGHT + 168) + COLORBAR_HEIGHT, 5 * CELL_WIDTH + 4 * GAP, 3)

    data = generate_demo_dataset(tmp_path / "demo", train_images=1, val_images=2, size=(64, 64))
    run = runner.invoke(app, ["viz-iam", "--dataset", str(data.val_json), "--images", str(data.val_dir),
                              "--weights", str(weights), "--channels", "0-3", "--out", str(tmp_path / "mean.png")])
    assert run.exit_code == 0, run.output
    stats = json.loads((tmp_path / "mean.json").read_text())
    assert stats["images"] == 2 and [c["channel"] for c in stats["channels"]] == [0, 1, 2, 3]

    bad = runner.invoke(app, ["viz-iam", "--dataset", str(data.val_json), "--images", str(data.val_dir),
                              "--weights", str(weights), "--channels", "0-99"])
    assert bad.exit_code == 2 and "IAM channels 0-9" in bad.output
    nothing = runner.invoke(app, ["viz-iam", str(image), "--weights", str(weights), "--conf", "0.999"])
    assert nothing.exit_code == 1 and "lower the confidence threshold (--conf)" in nothing.output
    former = runner.invoke(app, ["viz-iam", str(image), "--weights", str(weights), "--score-threshold", "0.999"])
    assert former.exit_code == 1 and "--score-threshold is deprecated" in former.output
    neither = runner.invoke(app, ["viz-iam", "--weights", str(weights)])
    assert neither.exit_code == 2 and "exactly one of IMAGE or --dataset" in neither.output
