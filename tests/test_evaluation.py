"""COCO mask AP: hand-computed cases, results files, crowded images and the eval command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparseinst_cli.analysis.coco_eval import evaluate_results, mask_ap
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import encode_rle, match_categories
from sparseinst_cli.data.demo_data import generate_demo_dataset
from sparseinst_cli.errors import ResultsError, SparseInstError
from sparseinst_cli.inference.predictor import Predictor

from .conftest import SMALL_MODEL, RecordingProgress, random_checkpoint

HEIGHT, WIDTH = 40, 60
RECALL_POINTS = 101  # COCO interpolates precision at recall 0, 0.01, ..., 1


def box_mask(x0: int, y0: int, x1: int, y1: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_ground_truth(path: Path, objects: dict[int, list[tuple[int, np.ndarray]]], num_images: int,
                       categories: tuple[str, ...] = ("a", "b")) -> Path:
    """objects: image id -> [(category id, mask)]."""
    annotations = []
    for image_id, items in objects.items():
        for category_id, mask in items:
            ys, xs = np.nonzero(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "segmentation": encode_rle(mask), "area": int(mask.sum()), "iscrowd": 0,
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
            })
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": HEIGHT, "width": WIDTH} for i in range(1, num_images + 1)],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)],
    }
    path.write_text(json.dumps(data))
    return path


def result(image_id: int, category_id: int, mask: np.ndarray, score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "segmentation": encode_rle(mask), "score": score}


@pytest.fixture
def two_images(tmp_path: Path) -> tuple[Path, dict]:
    objects = {
        1: [(1, box_mask(2, 2, 12, 12))],
        2: [(1, box_mask(30, 5, 50, 25)), (2, box_mask(2, 20, 14, 38))],
    }
    return write_ground_truth(tmp_path / "gt.json", objects, 2), objects


def test_perfect_predictions_give_ap_100(two_images) -> None:
    gt, objects = two_images
    results = [result(i, c, m, 0.9) for i, items in objects.items() for c, m in items]
    metrics = evaluate_results(gt, results).metrics
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == 100.0
    assert metrics["per_class"] == {"a": 100.0, "b": 100.0}


def test_shifted_mask_counts_only_below_its_iou(tmp_path: Path) -> None:
    # A 10x10 square shifted by 2 px: IoU = 80 / 120 = 0.667, a hit at IoU 0.50, 0.55, 0.60, 0.65
    # and a miss at the six thresholds from 0.70: AP = 4/10 = 40, AP50 = 100, AP75 = 0.
    gt = write_ground_truth(tmp_path / "gt.json", {1: [(1, box_mask(10, 10, 20, 20))]}, 1, ("a",))
    metrics = evaluate_results(gt, [result(1, 1, box_mask(12, 10, 22, 20), 0.8)]).metrics
    assert metrics["AP"] == pytest.approx(40.0)
    assert metrics["AP50"] == 100.0 and metrics["AP75"] == 0.0


def test_swapped_label_is_a_false_positive(two_images) -> None:
    gt, objects = two_images
    (a1, mask_a1), = objects[1]
    (_, mask_a2), (b, mask_b) = objects[2]
    results = [
        result(1, 1, mask_a1, 0.9),  # right
        result(2, 2, mask_a2, 0.8),  # an "a" called "b": a miss for "a", a false positive for "b"
        result(2, b, mask_b, 0.7),  # right, ranked below the false positive
    ]
    # class a: 2 objects, one found at precision 1 -> precision 1 at recall 0..0.50 (51 of 101 points).
    # class b: 1 object found second -> precision 1/2 at every recall point.
    expected_a = 100 * 51 / RECALL_POINTS
    expected_b = 50.0
    metrics = evaluate_results(gt, results).metrics
    assert metrics["per_class"]["a"] == pytest.approx(expected_a, abs=1e-3)
    assert metrics["per_class"]["b"] == pytest.approx(expected_b, abs=1e-3)
    assert metrics["AP"] == pytest.approx((expected_a + expected_b) / 2, abs=1e-3)


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
def test_class_agnostic_scoring_ignores_the_labels(two_images, backend: str) -> None:
    if backend == "faster-coco-eval":
        pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is an optional backend (pip install .[fast-eval])")
    gt, objects = two_images
    # Every mask exact, every label swapped: no class-aware hit; class-agnostic, all three found.
    results = [result(i, 3 - c, m, 0.9) for i, items in objects.items() for c, m in items]
    aware = mask_ap(gt, results, backend=backend)
    agnostic = mask_ap(gt, results, backend=backend, class_agnostic=True)
    assert aware["AP"] == 0.0 and aware["per_class"] == {"a": 0.0, "b": 0.0}
    assert agnostic["AP"] == agnostic["AP50"] == 100.0 and agnostic["per_class"] == {}
    # A mask on nothing, ranked first: precision 1/2, 2/3, 3/4 at recall 1/3, 2/3, 1, which
    # COCO's interpolation (the best precision at any higher recall) makes 3/4 everywhere.
    stray = result(1, 1, box_mask(40, 30, 50, 38), 0.95)
    with_stray = mask_ap(gt, [stray, *results], backend=backend, class_agnostic=True)
    assert with_stray["AP"] == pytest.approx(75.0, abs=1e-3)


def test_empty_predictions_give_zero_with_a_warning(two_images) -> None:
    gt, _ = two_images
    evaluation = evaluate_results(gt, [])
    assert evaluation.metrics["AP"] == 0.0 and evaluation.metrics["AP50"] == 0.0
    assert any("no predictions" in str(w) for w in evaluation.warnings)


def test_results_json_round_trip(two_images, tmp_path: Path) -> None:
    gt, objects = two_images
    results = [result(i, c, m, s) for (i, items), s in zip(objects.items(), (0.9, 0.4)) for c, m in items]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert evaluate_results(gt, path).metrics == mask_ap(gt, results)


def test_images_with_more_than_100_instances(tmp_path: Path) -> None:
    # 12 x 10 = 120 one-cell squares, all predicted perfectly.
    masks = [box_mask(5 * c, 4 * r, 5 * c + 3, 4 * r + 3) for r in range(10) for c in range(12)]
    gt = write_ground_truth(tmp_path / "gt.json", {1: [(1, m) for m in masks]}, 1, ("a",))
    results = [result(1, 1, m, 0.5 + i / 1000) for i, m in enumerate(masks)]
    capped = evaluate_results(gt, results)
    # COCO scores the 100 best: recall 100/120, precision 1 -> 84 of 101 recall points (0..0.83).
    assert capped.metrics["AP"] == pytest.approx(100 * 84 / RECALL_POINTS, abs=1e-3)
    crowded_gt = [w for w in capped.warnings if "more than 100 annotated instances" in str(w)]
    assert len(crowded_gt) == 1 and crowded_gt[0].setting == "max_detections"
    assert any("more than 100 predictions" in str(w) for w in capped.warnings)
    assert evaluate_results(gt, results, max_detections=150).metrics["AP"] == 100.0


@pytest.mark.parametrize("record, message", [
    ({"image_id": 7, "category_id": 1, "score": 1.0}, "needs image_id, category_id, segmentation, score"),
    ({"image_id": 7, "category_id": 1, "score": 1.0, "segmentation": {}}, "image id 7"),
    ({"image_id": 1, "category_id": 9, "score": 1.0, "segmentation": {}}, "category id 9"),
    ({"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": [[0, 0, 1, 1, 1, 0]]}, "must be RLE"),
])
def test_malformed_results_are_named(two_images, tmp_path: Path, record: dict, message: str) -> None:
    gt, _ = two_images
    with pytest.raises(ResultsError, match=message):
        evaluate_results(gt, [record])


def test_categories_are_matched_by_name_then_by_order() -> None:
    dataset = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert match_categories([{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}], dataset) == [
        {"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    assert match_categories([{"id": 1, "name": "class_0"}, {"id": 2, "name": "class_1"}], dataset) == dataset
    with pytest.raises(ResultsError, match="3 classes"):
        match_categories([{"id": i, "name": str(i)} for i in range(3)], dataset)


def test_a_predictor_with_a_dataset_s_categories_leaves_the_original_as_it_was() -> None:
    predictor = Predictor.from_recipe("r50_giam", overrides=[*SMALL_MODEL, "inference.conf=0.0"])
    dataset = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "cow"}]
    renamed = predictor.with_categories(dataset)
    assert renamed.model is predictor.model  # the network is shared, not copied
    assert predictor.class_names == ["class_0", "class_1", "class_2"] and renamed.class_names == ["cat", "dog", "cow"]
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    before, after = predictor(image)[0], renamed(image)[0]
    assert len(before) > 0 and np.array_equal(before.labels, after.labels)
    assert after.names == [["cat", "dog", "cow"][label] for label in after.labels.tolist()]
    assert before.names == [f"class_{label}" for label in before.labels.tolist()]
    with pytest.raises(SparseInstError, match="2 categories given for a model of 3 classes"):
        predictor.with_categories(dataset[:2])


@pytest.fixture
def demo_and_weights(tmp_path: Path):
    """Three 64x64 demo images and a small random model with the demo's four classes."""
    data = generate_demo_dataset(tmp_path / "demo", train_images=1, val_images=3, size=(64, 64))
    return data, random_checkpoint(tmp_path / "model.safetensors", "r50_giam",
                                   [*SMALL_MODEL, "model.num_classes=4", "inference.conf=0.0",
                                    "input.min_size_test=64", "input.max_size_test=64"], seed=1)


def test_eval_command_runs_a_model_and_scores_its_results_file(demo_and_weights, tmp_path: Path) -> None:
    data, weights = demo_and_weights
    runner = CliRunner()
    out = tmp_path / "eval"
    run = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(data.val_json),
                              "--images", str(data.val_dir), "--out", str(out), "--max-detections", "5"])
    assert run.exit_code == 0, run.output
    written = json.loads((out / "eval.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert written["images"] == 3 and written["detections"] == len(results) == 3 * 5  # 10 candidates, 5 kept
    assert "Per-class mask AP" in run.output and "circle" in run.output

    again = runner.invoke(app, ["eval", "--results", str(out / "results.json"), "--data", str(data.val_json),
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    rescored = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert {k: rescored[k] for k in ("AP", "AP50", "per_class")} == {k: written[k] for k in ("AP", "AP50", "per_class")}


def test_eval_command_argument_errors(two_images, tmp_path: Path) -> None:
    gt, _ = two_images
    runner = CliRunner()
    neither = runner.invoke(app, ["eval", "--data", str(gt)])  # the zoo's default model, which needs --images
    assert neither.exit_code == 2 and "needs --images" in neither.output
    both = runner.invoke(app, ["eval", "--data", str(gt), "--results", str(gt), "--weights", "w.safetensors"])
    assert both.exit_code == 2 and "not both" in both.output
    missing = runner.invoke(app, ["eval", "--data", str(tmp_path / "nope.json"), "--results", str(gt)])
    assert missing.exit_code == 2 and "no such annotations file" in missing.output
    no_images = runner.invoke(app, ["eval", "--data", str(gt), "--weights", str(tmp_path / "w.safetensors")])
    assert no_images.exit_code == 2 and "--images" in no_images.output


def test_tide_command_runs_models_like_eval(demo_and_weights, tmp_path: Path) -> None:
    data, weights = demo_and_weights
    runner = CliRunner()
    run = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(data.val_json),
                              "--images", str(data.val_dir), "--out", str(tmp_path / "eval")])
    assert run.exit_code == 0, run.output
    tide = runner.invoke(app, ["tide", "--weights", str(weights), "--data", str(data.val_json),
                               "--images", str(data.val_dir), "--out", str(tmp_path / "tide")])
    assert tide.exit_code == 0, tide.output
    report = json.loads((tmp_path / "tide" / "tide.json").read_text())["model"]
    assert report["ap50"] == pytest.approx(json.loads((tmp_path / "eval" / "eval.json").read_text())["AP50"], abs=1e-3)
    assert report["predictions"] == 3 * 10 and report["ground_truth"] == len(json.loads(data.val_json.read_text())["annotations"])


def test_the_python_api_gives_what_the_command_writes(demo_and_weights, tmp_path: Path) -> None:
    """``sparseinst_cli.evaluate_dataset`` (the Python API) equals ``sparseinst eval``,
    and reports its progress image by image."""
    import sparseinst_cli
    from sparseinst_cli import ModelSource, evaluate_dataset

    data, weights = demo_and_weights
    assert all(hasattr(sparseinst_cli, name) for name in sparseinst_cli.__all__)
    out = tmp_path / "eval"
    run = CliRunner().invoke(app, ["eval", "--weights", str(weights), "--data", str(data.val_json),
                                   "--images", str(data.val_dir), "--out", str(out), "--batch-size", "2"])
    assert run.exit_code == 0, run.output
    progress = RecordingProgress()
    evaluation = evaluate_dataset(ModelSource(weights=weights), data.val_json, data.val_dir, batch_size=2,
                                  progress=progress)
    written = json.loads((out / "eval.json").read_text())
    assert {k: written[k] for k in ("AP", "AP50", "per_class", "detections")} == {
        **{k: evaluation.metrics[k] for k in ("AP", "AP50", "per_class")}, "detections": len(evaluation.results)}
    assert progress.events[0] == ("start", "eval", 3, 0) and progress.events[-1] == ("stop",)
    assert [e for e in progress.events if e[0] == "advance"] == [("advance", 2), ("advance", 3)]


def noisy_predictions(annotations: Path, seed: int = 0) -> list[dict]:
    """Realistic predictions: each object's mask shifted by a few pixels, eroded or dilated, some
    with the wrong class or missed, plus false positives, with scores drawn at random."""
    import cv2
    from pycocotools import mask as mask_utils

    from sparseinst_cli.data.coco import segmentation_rle

    data = json.loads(annotations.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    category_ids = [c["id"] for c in data["categories"]]
    rng = np.random.default_rng(seed)
    results = []
    for entry in data["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        height, width = sizes[entry["image_id"]]
        mask = mask_utils.decode(segmentation_rle(entry["segmentation"], height, width))
        mask = np.roll(mask, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        kernel = np.ones((3, 3), np.uint8)
        mask = cv2.dilate(mask, kernel) if rng.random() < 0.5 else cv2.erode(mask, kernel)
        category = entry["category_id"] if rng.random() > 0.1 else int(rng.choice(category_ids))
        results.append({"image_id": entry["image_id"], "category_id": category, "segmentation": encode_rle(mask),
                        "score": round(float(rng.random()), 4)})
    for image_id, (height, width) in sizes.items():  # a false positive per image
        mask = np.zeros((height, width), np.uint8)
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        mask[y:y + 20, x:x + 20] = 1
        results.append({"image_id": image_id, "category_id": int(rng.choice(category_ids)),
                        "segmentation": encode_rle(mask), "score": round(float(rng.random()) * 0.5, 4)})
    return results


def test_faster_coco_eval_gives_pycocotools_numbers(tmp_path: Path) -> None:
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is an optional backend (pip install .[fast-eval])")
    generate_demo_dataset(tmp_path, train_images=1, val_images=24, seed=5)
    annotations = tmp_path / "val.json"
    results = noisy_predictions(annotations)
    reference = mask_ap(annotations, results, backend="pycocotools")
    faster = mask_ap(annotations, results, backend="faster-coco-eval")
    assert 20 < reference["AP"] < 90  # a realistic case, neither perfect nor empty
    assert faster == reference  # every summary and per-class number, to the third decimal
