"""Every figure the toolkit writes is readable: matplotlib figures keep all their text inside the
image, the curves show a lone evaluation and smooth without bias, and the activation-map figures
draw their maps on one colour scale with a colour bar."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from pycocotools import mask as mask_utils

from sparseinst_cli.analysis.activation_maps import (
    COLORBAR_HEIGHT,
    COLORBAR_PAD,
    COLORBAR_THICKNESS,
    FONT,
    FONT_SCALE,
    LABEL_HEIGHT,
    MEAN_CELL,
    MIN_FIGURE_WIDTH,
    SCALE_LABEL,
    TICK_LENGTH,
    ColorScale,
    heat_map,
    heat_overlay,
    image_figure,
    mean_maps_figure,
)
from sparseinst_cli.analysis.dataset_figure import dataset_figure
from sparseinst_cli.analysis.tide import (
    MAIN_ERRORS,
    SPECIAL_ERRORS,
    TideReport,
    tide_analysis,
)
from sparseinst_cli.analysis.tide_plot import summary_figure
from sparseinst_cli.data.check import DatasetCheck, check_dataset
from sparseinst_cli.data.coco import encode_rle
from sparseinst_cli.data.demo_data import generate_demo_dataset
from sparseinst_cli.data.images import read_image
from sparseinst_cli.engine.curves import (
    curves_figure,
    read_metrics,
    save_curves,
    smooth,
)
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, shapes_image

ROUNDING = 1.0  # pixels a text's extent may pass the canvas edge by
WHITE = 255


# ------------------------------------------------------------------ text inside the canvas


def _undrawn_tick_labels(figure: Figure) -> set[int]:
    """ids of the tick labels matplotlib keeps but does not draw: their tick lies outside the view."""
    hidden = set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = high - low
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - 1e-9 * span <= tick.get_loc() <= high + 1e-9 * span:
                    hidden.update((id(tick.label1), id(tick.label2)))
    return hidden


def assert_text_inside(figure: Figure) -> list[Text]:
    """Draw ``figure`` and check that every drawn text artist (titles, axis and tick labels,
    legends, annotations) lies inside the canvas; returns those texts."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox
    hidden = _undrawn_tick_labels(figure)
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text() and id(t) not in hidden]
    outside = []
    for text in texts:
        extent = text.get_window_extent(renderer)
        if (extent.x0 < canvas.x0 - ROUNDING or extent.y0 < canvas.y0 - ROUNDING
                or extent.x1 > canvas.x1 + ROUNDING or extent.y1 > canvas.y1 + ROUNDING):
            outside.append(f"{text.get_text()!r} at {extent.bounds}")
    assert not outside, f"text outside the {canvas.width:.0f}x{canvas.height:.0f} canvas: {outside}"
    return texts


# ------------------------------------------------------------------ curves


def _write_run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _training_records(steps: int = 60, evaluations: tuple[int, ...] = (60,)) -> list[dict]:
    """Losses that fall fast from ~100 (more than halving per record) and then level off with
    noise, as in the demo run."""
    rng = np.random.default_rng(0)
    records = []
    for step in range(10, steps * 10 + 1, 10):
        mask = 100.0 * np.exp(-step / 12) + 0.2 * (1 + 0.3 * rng.standard_normal())
        records.append({"time": step / 10, "step": step, "lr": 1e-3 * min(1.0, step / 100),
                        "loss_cls": 1.0 + 0.1 * rng.random(), "loss_mask": mask, "loss": mask + 1.0})
    records += [{"step": s * 10, "eval": {"AP": 31.7, "AP50": 58.3}} for s in evaluations]
    return records


def _labelled_line(figure: Figure, label: str) -> Line2D:
    return next(line for axes in figure.axes for line in axes.get_lines() if line.get_label() == label)


def test_curves_text_inside_and_a_lone_evaluation_shows(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", _training_records())
    series, evaluations = read_metrics(run)
    figure = curves_figure(series, evaluations, str(run))
    texts = assert_text_inside(figure)

    # The one evaluation is a visible marker per metric, with its value written beside it.
    for key in ("AP", "AP50"):
        line = _labelled_line(figure, key)
        assert len(line.get_xdata()) == 1
        assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() >= 6
    assert {"31.7", "58.3"} <= {t.get_text() for t in texts}
    assert read_image(save_curves(run, tmp_path / "curves.png")).shape == (450, 1500, 3)


def test_curves_smoothing_starts_at_the_data(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", _training_records())
    series, evaluations = read_metrics(run)
    figure = curves_figure(series, evaluations, str(run))
    raw = np.array([value for _, value in series["loss"]])
    smoothed = _labelled_line(figure, "total").get_ydata()
    assert smoothed[0] == pytest.approx(raw[0])
    # Bias-corrected: a constant stays itself from the first record on (an average started at 0 would not).
    np.testing.assert_allclose(smooth(np.full(5, 2.0)), np.full(5, 2.0))
    np.testing.assert_allclose(smooth(np.array([0.0, 0.0, 3.0])), [0.0, 0.0, 3.0 * 0.2 / (1 - 0.8**3)])
    # On the fast fall the trend stays near the data (a 10-record moving average runs 8x above it).
    assert np.all(smoothed[:10] / raw[:10] < 4.0)


def test_curves_of_a_single_record(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", [{"step": 1, "lr": 1e-3, "loss": 3.0, "loss_mask": 2.0}])
    series, evaluations = read_metrics(run)
    figure = curves_figure(series, evaluations, str(run))
    texts = assert_text_inside(figure)
    assert _labelled_line(figure, "total").get_marker() not in (None, "", "None", " ")
    assert "no evaluation yet" in {t.get_text() for t in texts}


# ------------------------------------------------------------------ dataset figure


def test_dataset_figure_of_a_real_dataset(tmp_path: Path) -> None:
    data = generate_demo_dataset(tmp_path / "demo", train_images=1, val_images=4, size=(64, 64))
    check = check_dataset(data.val_json, data.val_dir)
    texts = assert_text_inside(dataset_figure(check))
    assert f"{check.instances} instances in {check.images} images" in {t.get_text() for t in texts}


@pytest.mark.parametrize("classes", [0, 60])
def test_dataset_figure_of_no_or_many_long_named_classes(classes: int) -> None:
    rng = np.random.default_rng(0)
    per_class = {f"a rather long class name {i}": int(n) for i, n in enumerate(rng.integers(1, 500, classes))}
    areas = list(rng.uniform(4, 300**2, 10 * classes))
    check = DatasetCheck("val.json", None, 50, sum(per_class.values()), per_class, {},
                         {"small": 1, "medium": 2, "large": 3}, 0, 0, areas=areas)
    assert_text_inside(dataset_figure(check))


# ------------------------------------------------------------------ TIDE summary


def _tide_report() -> TideReport:
    size = 20
    squares = []
    for x0, y0 in ((0, 0), (10, 10)):
        mask = np.zeros((size, size), np.uint8)
        mask[y0: y0 + 10, x0: x0 + 10] = 1
        squares.append(encode_rle(mask))
    gt = {"images": [{"id": 1, "file_name": "1.png", "height": size, "width": size}],
          "annotations": [{"id": n + 1, "image_id": 1, "category_id": 1, "segmentation": rle, "iscrowd": 0,
                           "area": float(mask_utils.area(rle))} for n, rle in enumerate(squares)],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    results = [{"image_id": 1, "category_id": 2, "score": 0.9, "segmentation": squares[0]},
               {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": squares[1]}]
    return tide_analysis(gt, results)


@pytest.mark.parametrize("count", [1, 3, 9])
def test_tide_figure_text_inside(count: int) -> None:
    real = _tide_report()
    assert real.main["cls"] > 0  # the swapped class is a classification error
    reports = {"results": real}
    for n in range(1, count):  # more reports, the classification error tallest, as in a comparison
        reports[f"a longer model name {n}"] = TideReport(
            40.0 + n, {k: 30.0 / (i + n) for i, k in enumerate(MAIN_ERRORS)},
            {k: 10.0 + n for k in SPECIAL_ERRORS}, dict.fromkeys(MAIN_ERRORS, 1))
    figure = summary_figure(reports)
    texts = assert_text_inside(figure)
    assert all(f"(AP50 {r.ap:.2f})" in " ".join(t.get_text() for t in texts) for r in reports.values())
    # The legend sits outside the panels, so it hides no bar.
    figure.canvas.draw()
    legend = figure.legends[0].get_window_extent()
    assert all(not legend.overlaps(axes.get_window_extent()) for axes in figure.axes)


# ------------------------------------------------------------------ activation maps (OpenCV)


def _jet_index(pixels: np.ndarray) -> np.ndarray:
    """The JET colour-map entry (0-255) nearest each RGB pixel of ``pixels`` (n, 3)."""
    lut = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)[0].astype(int)
    return np.abs(pixels[:, None].astype(int) - lut[None]).sum(-1).argmin(1)


def assert_colorbar(figure: np.ndarray, scale: ColorScale) -> None:
    """The strip under the grid holds a left-to-right JET ramp, bottom to top colour, with a tick
    mark per tick value of ``scale``, and its label fits across the figure."""
    top = figure.shape[0] - COLORBAR_HEIGHT + COLORBAR_PAD
    row = figure[top + COLORBAR_THICKNESS // 2]
    bar = np.flatnonzero((row != WHITE).any(-1))
    assert bar.size > 100 and np.all(np.diff(bar) == 1)  # one unbroken ramp
    index = _jet_index(row[bar])
    assert index[0] <= 2 and index[-1] >= 253 and np.all(np.diff(index) >= 0)
    marks = figure[top + COLORBAR_THICKNESS + TICK_LENGTH // 2, bar[0]: bar[-1] + 1]
    dark = np.flatnonzero(marks.max(-1) < 128)
    assert len(scale.ticks()) >= 2 and 1 + np.count_nonzero(np.diff(dark) > 1) == len(scale.ticks())
    assert cv2.getTextSize(SCALE_LABEL, FONT, FONT_SCALE, 1)[0][0] < MIN_FIGURE_WIDTH


def test_mean_maps_share_one_scale_and_a_colorbar() -> None:
    yy, xx = torch.meshgrid(torch.arange(MEAN_CELL), torch.arange(MEAN_CELL), indexing="ij")
    bump = torch.exp(-((yy - 40.0) ** 2 + (xx - 50.0) ** 2) / 200) + 0.01
    strong = bump / bump.sum()
    weak = strong / 2  # half the values of the other map everywhere
    figure = mean_maps_figure(torch.stack([strong, weak])[:, None], [0, 1])
    scale = ColorScale.up_to(float(strong.max()), MEAN_CELL * MEAN_CELL)
    cells = [figure[LABEL_HEIGHT: LABEL_HEIGHT + MEAN_CELL, left: left + MEAN_CELL] for left in (0, MEAN_CELL + 2)]
    np.testing.assert_array_equal(cells[0], heat_map(strong.numpy(), scale))
    np.testing.assert_array_equal(cells[1], heat_map(weak.numpy(), scale))  # the colours of half the values
    assert not np.array_equal(cells[1], heat_map(weak.numpy()))  # not stretched to its own maximum
    assert np.mean(_jet_index(cells[1].reshape(-1, 3))) < np.mean(_jet_index(cells[0].reshape(-1, 3)))
    assert_colorbar(figure, scale)


def test_image_figure_maps_share_one_scale_and_a_colorbar() -> None:
    predictor = Predictor.from_recipe(load_recipe("r50_giam", [*SMALL_MODEL, "input.min_size_test=64",
                                                                "input.max_size_test=64"]), seed=5)
    image = shapes_image(48, 64)
    figure = image_figure(predictor, image, top_k=3, conf=0.0)
    peaks = figure.maps.amax((-2, -1))  # (K, G)
    assert figure.scale.high == pytest.approx(float(peaks.max()))
    assert float(peaks.min()) < float(peaks.max())  # maps of different strengths, drawn alike
    cell_h, cell_w = figure.maps.shape[-2:]
    resized = cv2.resize(image, (cell_w, cell_h), interpolation=cv2.INTER_AREA)
    row, group = np.unravel_index(int(peaks.argmin()), tuple(peaks.shape))
    top, left = row * (LABEL_HEIGHT + cell_h) + LABEL_HEIGHT, (1 + group) * (cell_w + 2)
    weakest = figure.grid[top: top + cell_h, left: left + cell_w]
    activation = figure.maps[row, group].numpy()
    np.testing.assert_array_equal(weakest, heat_overlay(resized, activation, figure.scale))
    assert not np.array_equal(weakest, heat_overlay(resized, activation))
    assert_colorbar(figure.grid, figure.scale)
