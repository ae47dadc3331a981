"""``sparseinst data ceiling``: the mask AP an inference size leaves within reach."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparseinst_cli.analysis.mask_ceiling import best_reachable_masks, mask_ceiling
from sparseinst_cli.cli.app import app
from sparseinst_cli.cli.exit_codes import EXIT_USAGE

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128" / "instances_train2017.json"
HEIGHT, WIDTH = 480, 640


def rectangle(x: int, y: int, w: int, h: int) -> list[int]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def write_coco(path: Path, boxes: list[tuple[int, int, int, int]]) -> Path:
    """One 480 x 640 image whose objects are the given rectangles, all of one class."""
    annotations = [{"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": [rectangle(*box)],
                    "area": box[2] * box[3], "bbox": list(box), "iscrowd": 0} for k, box in enumerate(boxes)]
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "height": HEIGHT, "width": WIDTH}],
                                "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return path


def square(top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((1, HEIGHT, WIDTH), np.uint8)
    mask[0, top : top + side, left : left + side] = 1
    return mask


def test_a_large_object_is_reached_and_a_tiny_one_is_not_at_a_small_size() -> None:
    _, large = best_reachable_masks(square(100, 120, 200), (HEIGHT, WIDTH), 384, 512, 32)
    _, tiny = best_reachable_masks(square(101, 203, 4), (HEIGHT, WIDTH), 384, 512, 32)
    assert large[0] > 0.95
    assert tiny[0] < 0.5


def test_any_padding_multiple_gives_the_network_s_grid() -> None:
    """The stride-8 map covers the padded input rounded up to whole cells, whatever the padding."""
    for divisibility in (1, 7, 32):
        odd = square(100, 120, 200)[:, : HEIGHT - 3, : WIDTH - 5]
        _, large = best_reachable_masks(odd, (HEIGHT - 3, WIDTH - 5), 381, 509, divisibility)
        assert large[0] > 0.95


def test_a_larger_input_size_reaches_small_objects_better() -> None:
    ious = [best_reachable_masks(square(203, 301, 9), (HEIGHT, WIDTH), short, 4 * short // 3, 32)[1][0]
            for short in (256, 480, 960)]
    assert ious[0] < ious[1] < ious[2]
    assert ious[2] > 0.8


def test_the_mask_returned_has_the_iou_returned() -> None:
    truth = square(50, 70, 13)
    masks, ious = best_reachable_masks(truth, (HEIGHT, WIDTH), 480, 640, 32)
    intersection = np.count_nonzero(masks[0] & truth[0].astype(bool))
    union = np.count_nonzero(masks[0] | truth[0].astype(bool))
    assert masks.shape == truth.shape and masks.dtype == bool
    assert ious[0] == pytest.approx(intersection / union)


def test_ceiling_metrics_of_one_reached_and_one_lost_object(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "two.json", [(120, 100, 200, 150), (203, 301, 4, 4)])
    report = mask_ceiling(path, [(384, 512)], 32)
    size = report.sizes[0]
    assert report.instances == {"all": 2, "small": 1, "medium": 0, "large": 1}
    # Perfect ranking: precision 1 up to recall 1/2, nothing after; COCO's 101 recall points.
    assert size.metrics["AP50"] == pytest.approx(100 * 51 / 101, abs=1e-3)
    assert size.metrics["APl"] == pytest.approx(100.0)
    assert size.metrics["APs"] == pytest.approx(0.0)
    assert size.reached["0.5"] == {"all": 50.0, "small": 0.0, "medium": None, "large": 100.0}  # None: no objects


def test_data_ceiling_command_writes_a_row_per_size(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "two.json", [(120, 100, 200, 150), (203, 301, 4, 4)])
    result = CliRunner().invoke(app, ["data", "ceiling", str(path), "--size", "384", "--size", "960:1280",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "ceiling.json").read_text())
    assert [(s["min_size"], s["max_size"]) for s in report["sizes"]] == [(384, 512), (960, 1280)]
    assert report["sizes"][0]["reached"]["0.5"]["small"] == 0.0
    assert report["sizes"][1]["reached"]["0.5"]["small"] == 100.0
    assert "384:512" in result.output and "960:1280" in result.output


def test_data_ceiling_without_sizes_uses_the_default_ones(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "one.json", [(120, 100, 200, 150)])
    result = CliRunner().invoke(app, ["data", "ceiling", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "ceiling.json").read_text())
    assert [(s["min_size"], s["max_size"]) for s in report["sizes"]] == [(384, 512), (512, 682), (640, 853)]


@pytest.mark.parametrize("text", [None, '{"images": ['])
def test_data_ceiling_names_a_missing_or_broken_file(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "labels.json"
    if text is not None:
        path.write_text(text)
    result = CliRunner().invoke(app, ["data", "ceiling", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE
    assert "labels.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "ceiling.json").exists()


@pytest.mark.parametrize("size", ["64:x", "0", "64:128:256", "\u00b2"])
def test_data_ceiling_refuses_a_malformed_size(tmp_path: Path, size: str) -> None:
    path = write_coco(tmp_path / "two.json", [(120, 100, 200, 150)])
    result = CliRunner().invoke(app, ["data", "ceiling", str(path), "--size", size, "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE
    assert "SHORT:LONGEST" in result.output
    assert not (tmp_path / "out" / "ceiling.json").exists()


@pytest.mark.skipif(not COCO128.is_file(), reason=f"coco128 not found at {COCO128} (the shared data folder)")
def test_coco128_ceiling_at_384() -> None:
    """The real photos: at 384 px the stride-8 grid loses a fifth of the small objects."""
    size = mask_ceiling(COCO128, [(384, 512)], 32).sizes[0]
    assert 89.0 < size.metrics["AP50"] < 94.0
    assert size.metrics["APs"] < size.metrics["APm"] < size.metrics["APl"]
    assert 75.0 < size.reached["0.5"]["small"] < 88.0
    assert size.reached["0.5"]["large"] == 100.0
