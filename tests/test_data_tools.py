"""``sparseinst data check`` and ``sparseinst data split``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.check import (
    IMAGE_SIZE_MISMATCH,
    UNREADABLE_IMAGE,
    check_dataset,
)
from sparseinst_cli.data.datasets import (
    INVALID_SEGMENTATION,
    MISSING_IMAGE_FILE,
    UNKNOWN_CATEGORY,
)
from sparseinst_cli.data.images import read_image, read_skipping, write_image
from sparseinst_cli.data.split import split_dataset
from sparseinst_cli.errors import SparseInstError

from .conftest import COCO_SIZE, RECT, RecordingProgress, ann, make_coco

H, W = COCO_SIZE

CATEGORIES = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
BIG = [0, 0, 50, 0, 50, 35, 0, 35]  # 50 x 35 = 1750 pixels: medium


def dataset_with_known_problems(root: Path) -> tuple[Path, Path]:
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, 7)]
    path, folder = make_coco(root, images, [
        ann(1, [RECT]), ann(2, [BIG], category_id=2), ann(3, [RECT], image_id=2, iscrowd=1),
        ann(4, [RECT], image_id=3, category_id=9),  # unknown category
        ann(5, [1, 2, 3], image_id=3),  # a polygon of three numbers
        ann(6, [RECT], image_id=4), ann(7, [RECT], image_id=5), ann(8, [RECT], image_id=6),
    ], CATEGORIES)
    (folder / "4.png").unlink()  # missing file
    write_image(folder / "5.png", np.zeros((H + 1, W, 3), np.uint8))  # not the JSON's size
    (folder / "6.png").write_bytes(b"not an image")  # corrupt
    return path, folder


def test_check_lists_exactly_the_known_problems(tmp_path: Path) -> None:
    path, folder = dataset_with_known_problems(tmp_path)
    report = check_dataset(path, folder)
    found = sorted((issue.kind, issue.name) for issue in report.problems)
    assert found == sorted([
        (MISSING_IMAGE_FILE, "image '4.png'"),
        (UNKNOWN_CATEGORY, "annotation 4 (image '3.png')"),
        (INVALID_SEGMENTATION, "annotation 5 (image '3.png')"),
        (IMAGE_SIZE_MISMATCH, "image '5.png'"),
        (UNREADABLE_IMAGE, "image '6.png'"),
    ])
    assert report.problem_counts == {MISSING_IMAGE_FILE: 1, UNKNOWN_CATEGORY: 1, INVALID_SEGMENTATION: 1,
                                     IMAGE_SIZE_MISMATCH: 1, UNREADABLE_IMAGE: 1}
    assert report.images == 5 and report.instances == 4  # image 4 skipped; crowd and bad annotations out
    assert report.instances_per_class == {"thing": 3, "other": 1}
    assert report.crowd_regions == 1 and report.images_without_instances == 2  # images 2 and 3
    assert report.instance_sizes == {"small": 3, "medium": 1, "large": 0}
    assert report.image_sizes["median_height"] == H and report.image_sizes["max_width"] == W
    headers_only = check_dataset(path, folder, decode=False)
    assert UNREADABLE_IMAGE in headers_only.problem_counts and IMAGE_SIZE_MISMATCH in headers_only.problem_counts


def test_check_command_exit_codes_json_and_png(tmp_path: Path) -> None:
    path, folder = dataset_with_known_problems(tmp_path / "bad")
    out = tmp_path / "report"
    run = CliRunner().invoke(app, ["data", "check", str(path), "--images", str(folder), "--out", str(out)])
    assert run.exit_code == 1, run.output
    assert "5 problem(s)" in run.output and "unknown category" in run.output
    record = json.loads((out / "check.json").read_text())
    assert record["problem_counts"][UNKNOWN_CATEGORY] == 1 and len(record["problems"]) == 5
    assert (out / "dataset.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    clean, clean_folder = make_coco(tmp_path / "clean", annotations=[ann(1, [RECT])])
    run = CliRunner().invoke(app, ["data", "check", str(clean), "--images", str(clean_folder), "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "no problems found" in run.output
    missing = CliRunner().invoke(app, ["data", "check", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json" in missing.output


def many_images(root: Path, count: int = 20) -> Path:
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, count + 1)]
    annotations = [ann(i * 10 + j, [RECT], image_id=i) for i in range(1, count + 1) for j in range(i % 3)]
    path, _ = make_coco(root, images, annotations, write=False)
    data = json.loads(path.read_text())
    data["info"] = {"description": "kept"}
    path.write_text(json.dumps(data))
    return path


def test_split_is_deterministic_by_image_and_keeps_everything(tmp_path: Path) -> None:
    path = many_images(tmp_path)
    result = split_dataset(path, 0.25, seed=3)
    train, val = (json.loads(p.read_text()) for p in (result.train, result.val))
    assert (result.train_images, result.val_images) == (15, 5)
    train_ids, val_ids = {i["id"] for i in train["images"]}, {i["id"] for i in val["images"]}
    assert not train_ids & val_ids and train_ids | val_ids == set(range(1, 21))
    assert all(a["image_id"] in val_ids for a in val["annotations"])
    assert len(train["annotations"]) + len(val["annotations"]) == len(json.loads(path.read_text())["annotations"])
    assert val["info"] == {"description": "kept"} and val["categories"] == train["categories"]
    again = split_dataset(path, 0.25, seed=3, out=tmp_path / "again")
    assert {i["id"] for i in json.loads(again.val.read_text())["images"]} == val_ids
    other = split_dataset(path, 0.25, seed=4, out=tmp_path / "other")
    assert {i["id"] for i in json.loads(other.val.read_text())["images"]} != val_ids


def test_split_refuses_to_overwrite_and_bad_fractions(tmp_path: Path) -> None:
    path = many_images(tmp_path)
    split_dataset(path, 0.2)
    before = (tmp_path / "instances_val.json").read_bytes()
    with pytest.raises(SparseInstError, match="already exist"):
        split_dataset(path, 0.5, seed=9)
    assert (tmp_path / "instances_val.json").read_bytes() == before
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(SparseInstError, match="between 0 and 1"):
            split_dataset(path, fraction, out=tmp_path / "x")
    run = CliRunner().invoke(app, ["data", "split", str(path), "--val", "0.3", "--seed", "1", "--out",
                                   str(tmp_path / "cli")])
    assert run.exit_code == 0, run.output
    assert "train:" in run.output and "(14 images" in run.output and "(6 images" in run.output
    again = CliRunner().invoke(app, ["data", "split", str(path), "--out", str(tmp_path / "cli")])
    assert again.exit_code == 2 and "already exist" in again.output


def test_read_skipping_records_the_unreadable_and_goes_on(tmp_path: Path) -> None:
    good, bad, missing = tmp_path / "good.png", tmp_path / "bad.png", tmp_path / "missing.png"
    write_image(good, np.zeros((4, 5, 3), np.uint8))
    bad.write_bytes(b"not an image")
    skipped: list[str] = []
    progress = RecordingProgress()
    read = [(path, image.shape) for path, image in read_skipping([bad, good, missing], read_image, skipped, progress)]
    assert read == [(good, (4, 5, 3))]
    assert skipped == [f"{bad}: not a readable image (corrupt or unsupported format)", f"{missing}: no such file"]
    assert progress.events == [("note", f"skipped: {skipped[0]}"), ("advance", 1),
                               ("note", f"skipped: {skipped[1]}"), ("advance", 2)]
