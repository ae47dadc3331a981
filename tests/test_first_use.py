"""A new user's first job, as the README gives it: segment a photo with a zoo model by name. The
mirror is a folder holding an authors'-layout checkpoint (what an offline machine or a proxy
user sets up); nothing is downloaded from outside, nothing the user had is overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import COCO_CATEGORIES
from sparseinst_cli.data.demo_data import generate_demo_dataset
from sparseinst_cli.data.images import read_image, write_image
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.weights import zoo

from .conftest import TINY_TRAINING, shapes_image

NAME = zoo.DEFAULT_MODEL


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def offline_zoo(authors_checkpoint, tmp_path: Path, monkeypatch) -> Path:
    """SPARSEINST_MIRROR at a folder holding NAME.pth, an empty zoo home, the working directory
    a fresh folder, and the authors' URL unreachable (a download from it would fail)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{NAME}.pth").write_bytes(authors_checkpoint[1])
    monkeypatch.setenv(zoo.MIRROR_VARIABLE, str(mirror))
    monkeypatch.setenv(zoo.HOME_VARIABLE, str(tmp_path / "home"))
    monkeypatch.setattr(zoo, "authors_url", lambda model: f"http://127.0.0.1:9/{model.name}.pth")  # the discard port
    monkeypatch.chdir(tmp_path)
    return mirror


def test_predict_with_a_zoo_name_gives_overlays_and_a_coco_file(offline_zoo: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    write_image(photo, shapes_image(240, 320))
    before = {p: digest(p) for p in (photo, offline_zoo / f"{NAME}.pth")}
    runner = CliRunner()
    run = runner.invoke(app, ["predict", "photo.jpg", "--weights", NAME, "--conf", "0"])
    assert run.exit_code == 0, run.output
    out = tmp_path / "runs" / "predict"
    assert read_image(out / "photo.png").shape == (240, 320, 3)
    coco = json.loads((out / "instances.json").read_text())
    assert coco["images"] == [{"id": 1, "file_name": "photo.jpg", "height": 240, "width": 320}]
    assert [(c["id"], c["name"]) for c in coco["categories"]] == list(COCO_CATEGORIES)
    annotations = coco["annotations"]
    assert annotations, "a random model over every candidate gives instances"
    assert all(a["area"] > 0 and a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in annotations)  # no empty masks
    scores = [a["score"] for a in annotations]
    assert scores == sorted(scores, reverse=True) and len({a["id"] for a in annotations}) == len(annotations)
    assert {r["file_name"] for r in json.loads((out / "results.json").read_text())} == {"photo.jpg"}
    # The model is cached converted; the second run reads the cache and writes a folder of its own.
    cached = zoo.converted_path(NAME)
    stamp = cached.stat().st_mtime_ns
    again = runner.invoke(app, ["predict", "photo.jpg", "--weights", NAME, "--conf", "0"])
    assert again.exit_code == 0, again.output
    assert cached.stat().st_mtime_ns == stamp and (tmp_path / "runs" / "predict2" / "instances.json").is_file()
    assert json.loads((out / "instances.json").read_text()) == coco
    assert {p: digest(p) for p in before} == before  # the photo and the mirror's file are untouched


def test_the_api_and_the_commands_without_weights_use_the_zoo(offline_zoo: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_pretrained(NAME)
    assert predictor.recipe.input.min_size_test == zoo.find_model(NAME).input_size  # the published test size
    assert predictor.class_names == [name for _, name in COCO_CATEGORIES]
    image = shapes_image(240, 320)
    prediction = predictor(image, conf=0.0)[0]
    assert len(prediction) > 0 and set(prediction.names) <= set(predictor.class_names)
    write_image(tmp_path / "street.png", image)
    run = CliRunner().invoke(app, ["viz-iam", "street.png", "--conf", "0", "--top-k", "2"])
    assert run.exit_code == 0, run.output
    assert f"no --weights given: showing the zoo's default model, {NAME}" in " ".join(run.output.split())
    assert read_image(tmp_path / "runs" / "viz-iam" / "street_iam.png").shape[0] > 0
    truth = {"images": [{"id": 1, "file_name": "street.png", "height": 240, "width": 320}],
             "categories": [{"id": cid, "name": name} for cid, name in COCO_CATEGORIES],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 60, 80], "area": 4800.0,
                              "segmentation": [[20, 20, 80, 20, 80, 100, 20, 100]], "iscrowd": 0}]}
    (tmp_path / "street.json").write_text(json.dumps(truth))
    evaluated = CliRunner().invoke(app, ["eval", "--data", "street.json", "--images", "."])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"evaluating the zoo's default model, {NAME}" in " ".join(evaluated.output.split())
    results = json.loads((tmp_path / "runs" / "eval" / "results.json").read_text())
    assert len(results) == len(prediction)  # eval scores every candidate, whatever conf says
    assert json.loads((tmp_path / "runs" / "eval" / "eval.json").read_text())["AP"] >= 0


def test_training_starts_from_a_zoo_model_by_name(offline_zoo: Path, tmp_path: Path) -> None:

    demo = tmp_path / "demo"
    generate_demo_dataset(demo, train_images=2, val_images=1, size=(64, 64), seed=0)
    sets = [arg for item in (*TINY_TRAINING, "model.backbone.name=resnet50", "model.backbone.stem_width=64",
                             "model.backbone.base_width=64", "train.solver.batch_size=2",
                             "train.solver.max_iter=1", f"data.train.annotations={demo / 'train.json'}",
                             f"data.train.images={demo / 'train'}") for arg in ("--set", item)]
    run = CliRunner().invoke(app, ["train", "r50_giam", "--out", "tuned", *sets, "--init-from", NAME])
    assert run.exit_code == 0, run.output
    started = json.loads((tmp_path / "tuned" / "run.json").read_text())["init_from"]
    assert started["source"].startswith(str(zoo.converted_path(NAME)))  # downloaded, converted, then loaded
    assert started["loaded"] >= 265  # the whole R-50 backbone (53 convolutions and their norms); the rest is fresh
