"""What a prediction gives: instances best first without empty masks, class names, the overlay,
COCO records and supervision's Detections; and the one confidence threshold, ``conf``."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from components import SparseInstOutput
from components.postprocess import postprocess
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.images import read_image, write_image
from sparseinst_cli.errors import RecipeError, SparseInstError
from sparseinst_cli.inference.drawing import label_box
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.inference.results import Prediction
from sparseinst_cli.recipe import load_recipe, stored_recipe

from .conftest import SMALL_MODEL, shapes_image

CONF_CLASSES = ["cat", "dog", "bird"]


def random_output(candidates: int = 40, seed: int = 7) -> SparseInstOutput:
    generator = torch.Generator().manual_seed(seed)
    return SparseInstOutput(torch.randn(1, candidates, 3, generator=generator) * 3,
                            torch.randn(1, candidates, 1, generator=generator) * 3,
                            torch.randn(1, candidates, 24, 32, generator=generator) * 4)


def test_instances_come_best_first_without_empty_masks() -> None:
    output = random_output()
    output.masks[0, :5] = -20.0  # five candidates whose masks are empty everywhere
    everything = postprocess(output, (96, 128), [(90, 120)], [(90, 120)], keep_empty=True)[0]
    kept = postprocess(output, (96, 128), [(90, 120)], [(90, 120)])[0]
    empty = ~everything.masks.flatten(1).any(1)
    assert int(empty.sum()) >= 5
    assert len(kept) == len(everything) - int(empty.sum())
    assert kept.masks.flatten(1).any(1).all()
    assert torch.equal(kept.scores, everything.scores[~empty])
    assert (kept.scores[:-1] >= kept.scores[1:]).all() and (everything.scores[:-1] >= everything.scores[1:]).all()
    boxes = kept.boxes
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()


def test_conf_keeps_the_confident_instances_with_the_same_masks() -> None:
    output = random_output()
    full = postprocess(output, (96, 128), [(90, 120)], [(61, 77)])[0]
    conf = float(full.scores.median())
    some = postprocess(output, (96, 128), [(90, 120)], [(61, 77)], conf=conf)[0]
    chosen = full.scores >= conf
    assert 0 < len(some) < len(full) and len(some) == int(chosen.sum())
    for name in ("scores", "labels", "masks", "boxes"):
        assert torch.equal(getattr(some, name), getattr(full, name)[chosen]), name


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    recipe = load_recipe("r50_giam", [*SMALL_MODEL, f"model.class_names={json.dumps(CONF_CLASSES)}",
                                      "input.min_size_test=64", "input.max_size_test=96"])
    return Predictor.from_recipe(recipe)


def test_a_prediction_names_its_classes_and_keeps_its_image(predictor: Predictor, tmp_path) -> None:
    path = tmp_path / "photo.png"
    write_image(path, shapes_image(60, 80))
    (prediction,) = predictor(path, conf=0.0)
    assert isinstance(prediction, Prediction) and len(prediction) > 0
    assert prediction.source == str(path) and prediction.image.shape == (60, 80, 3)
    assert prediction.class_names == CONF_CLASSES
    assert prediction.names == [CONF_CLASSES[label] for label in prediction.labels.tolist()]
    assert (prediction.scores[:-1] >= prediction.scores[1:]).all()
    assert prediction.masks.flatten(1).any(1).all()
    assert isinstance(prediction.select(prediction.scores > 0), Prediction)  # selections keep the names and image
    assert f"{len(prediction)} instance(s) in 80x60" in repr(prediction)


def test_the_default_confidence_comes_from_the_recipe(predictor: Predictor) -> None:
    image = shapes_image(60, 80)
    everything = predictor(image, conf=0.0)[0]
    assert predictor.recipe.inference.conf == 0.3
    default = predictor(image)[0]
    assert torch.equal(default.scores, everything.scores[everything.scores >= 0.3])
    assert len(predictor(image, conf=1.0)[0]) == 0


def test_plot_and_save_draw_the_overlay(predictor: Predictor, tmp_path) -> None:
    source = tmp_path / "photo.png"
    image = shapes_image(60, 80)
    write_image(source, image)
    prediction = predictor(source, conf=0.0)[0]
    drawn = prediction.plot()
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    first = prediction.masks[0].numpy()
    assert (drawn[first] != image[first]).any(axis=-1).mean() > 0.9  # the best instance's mask is tinted
    unlabelled = prediction.plot(labels=False)
    near = cv2.dilate(prediction.masks.any(0).numpy().astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert (~near).any() and np.array_equal(unlabelled[~near], image[~near])  # nothing drawn away from the masks
    saved = prediction.save(tmp_path / "overlay.jpg")
    assert read_image(saved).shape == image.shape
    with pytest.raises(SparseInstError, match="is the image this prediction was made from"):
        prediction.save(source)
    assert np.array_equal(read_image(source), image)  # the source is untouched
    bare = Prediction.of(prediction, prediction.categories)
    with pytest.raises(SparseInstError, match="holds no image"):
        bare.plot()
    assert bare.plot(image).shape == image.shape


def test_labels_stay_inside_the_picture() -> None:
    width, height = 200, 100
    for x, y in [(0, 0), (195, 0), (195, 95), (-5, 50), (100, 100), (0, 99)]:
        left, top, right, bottom = label_box("square 0.97", x, y, width, height)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height, (x, y)
    left, _, right, _ = label_box("square 0.97", 190, 40, width, height)
    assert right == width and left < 190  # moved left rather than cut ("squar")


def test_to_coco_gives_records_with_rle_area_and_box(predictor: Predictor) -> None:
    prediction = predictor(shapes_image(60, 80), conf=0.0)[0]
    records = prediction.to_coco(image_id=7)
    assert len(records) == len(prediction)
    for record, mask, box, score, label in zip(records, prediction.masks, prediction.boxes, prediction.scores,
                                               prediction.labels.tolist()):
        assert record["image_id"] == 7 and record["iscrowd"] == 0
        assert record["category_id"] == prediction.categories[label]["id"] == label + 1
        decoded = mask_utils.decode(record["segmentation"])
        assert np.array_equal(decoded.astype(bool), mask.numpy())
        assert record["area"] == int(mask.sum()) > 0
        x0, y0, x1, y1 = box.tolist()
        assert record["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        assert record["score"] == pytest.approx(float(score), abs=1e-6)


def test_to_supervision_gives_detections(predictor: Predictor) -> None:
    supervision = pytest.importorskip("supervision", reason="the optional extra: pip install 'sparseinst[supervision]'")
    prediction = predictor(shapes_image(60, 80), conf=0.0)[0]
    detections = prediction.to_supervision()
    assert isinstance(detections, supervision.Detections) and len(detections) == len(prediction)
    assert np.array_equal(detections.mask, prediction.masks.numpy())
    np.testing.assert_allclose(detections.xyxy, prediction.boxes.numpy())
    np.testing.assert_allclose(detections.confidence, prediction.scores.numpy(), rtol=1e-6)
    assert detections.class_id.tolist() == prediction.labels.tolist()
    assert list(detections.data["class_name"]) == prediction.names
    annotated = supervision.MaskAnnotator().annotate(prediction.image.copy(), detections)
    assert annotated.shape == prediction.image.shape


def test_score_threshold_is_the_former_name_of_conf(tmp_path) -> None:
    with pytest.warns(FutureWarning, match="inference.conf"):
        recipe = load_recipe("r50_giam", ["inference.score_threshold=0.6"])
    assert recipe.inference.conf == 0.6
    written = tmp_path / "mine.toml"
    written.write_text('extends = "r50_giam"\n[inference]\nscore_threshold = 0.6\n')
    with pytest.warns(FutureWarning, match="inference.conf"):
        assert load_recipe(written).inference.conf == 0.6
    written.write_text('extends = "r50_giam"\n[inference]\nscore_threshold = 0.6\nconf = 0.5\n')
    with pytest.raises(RecipeError, match="give conf only"):
        load_recipe(written)
    # A stored recipe's score_threshold was the candidate cut (0.005), not a confidence: dropped.
    stored = load_recipe("r50_giam").dump()
    stored["inference"]["score_threshold"] = 0.005
    del stored["inference"]["conf"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stored_recipe(stored, "old checkpoint").inference.conf == 0.3


def test_predict_takes_conf_and_its_former_names(tmp_path) -> None:
    image = tmp_path / "a.png"
    write_image(image, shapes_image(64, 80))
    sets = [a for item in (*SMALL_MODEL, "input.min_size_test=64", "input.max_size_test=80") for a in ("--set", item)]
    runner = CliRunner()

    def run(name: str, *extra: str) -> tuple[list[dict], str]:
        result = runner.invoke(app, ["predict", str(image), "--recipe", "r50_giam", *sets, "--out", str(tmp_path / name),
                                     "--no-overlays", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "results.json").read_text()), result.output

    everything, _ = run("all", "--conf", "0")
    middle = sorted(r["score"] for r in everything)[len(everything) // 2]
    confident, _ = run("some", "--conf", str(middle))
    assert 0 < len(confident) < len(everything)
    assert all(r["score"] >= middle for r in confident)
    for former in ("--min-score", "--show-threshold"):
        again, output = run(former.strip("-"), former, str(middle))
        assert again == confident and f"{former} is deprecated" in output
    twice = runner.invoke(app, ["predict", str(image), "--recipe", "r50_giam", *sets, "--conf", "0.1", "--min-score",
                                "0.2", "--out", str(tmp_path / "twice")])
    assert twice.exit_code == 2 and "give --conf once" in twice.output
    # results.json names each image file; every record has a positive area.
    assert {r["file_name"] for r in everything} == {"a.png"} and all(r["area"] > 0 for r in everything)


def test_a_random_model_labels_its_classes_by_index() -> None:
    predictor = Predictor.from_recipe("r50_giam", overrides=SMALL_MODEL + ["model.num_classes=80"])
    assert predictor.class_names == [f"class_{i}" for i in range(80)]  # not COCO's names, which it does not know
    named = Predictor.from_recipe("r50_giam", overrides=[*SMALL_MODEL, 'model.class_names=["a", "b", "c"]'])
    assert named.class_names == ["a", "b", "c"]
