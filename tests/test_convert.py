"""``sparseinst data convert``: YOLO, LabelMe and instance-mask PNGs to COCO, read back by training's reader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.convert import convert_dataset, yolo_names
from sparseinst_cli.data.datasets import CocoInstances
from sparseinst_cli.data.images import write_image
from sparseinst_cli.errors import DatasetError

H, W = 60, 80


def blank(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((H, W, 3), 90, np.uint8))
    return path


def masks_by_label(annotations: Path, images: Path) -> dict[str, list[np.ndarray]]:
    dataset = CocoInstances(annotations, images)
    found: dict[str, list[np.ndarray]] = {}
    for index in range(len(dataset)):
        sample = dataset.load(index)
        for mask, label in zip(sample.masks, sample.labels):
            found.setdefault(dataset.class_names[label], []).append(mask)
    return found


def rectangle(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def test_instance_mask_pngs_keep_holes_and_parts(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    blank(images, "a.png")
    blank(images, "sub/b.png")
    ids = np.zeros((H, W), np.uint8)
    ids[10:40, 10:40] = 1
    ids[20:30, 20:30] = 0  # a hole in object 1
    ids[5:15, 50:60] = 2
    ids[45:55, 50:60] = 2  # object 2 in two parts
    masks.mkdir()
    cv2.imwrite(str(masks / "a.png"), ids)
    (masks / "sub").mkdir()
    cv2.imwrite(str(masks / "sub" / "b.png"), (rectangle(0, 0, 10, 10) * 7).astype(np.uint8))
    result = convert_dataset("masks", masks, tmp_path / "out.json", images=images, class_name="person")
    assert (result.images, result.instances, result.categories) == (2, 3, ["person"])
    data = json.loads((tmp_path / "out.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["a.png", "sub/b.png"]
    first, second = data["annotations"][:2]
    assert first["area"] == 30 * 30 - 10 * 10 and first["bbox"] == [10, 10, 30, 30]
    assert second["area"] == 200 and second["bbox"] == [50, 5, 10, 50]
    read = masks_by_label(tmp_path / "out.json", images)["person"]
    assert np.array_equal(read[0], (ids == 1).astype(np.uint8)) and np.array_equal(read[1], (ids == 2).astype(np.uint8))
    assert read[0][25, 25] == 0  # the hole survived the round trip


def test_labelme_groups_parts_and_reads_rectangles_and_circles(tmp_path: Path) -> None:
    folder = tmp_path / "labelme"
    blank(folder, "scene.png")
    shapes = [
        {"label": "car", "points": [[10, 10], [30, 10], [30, 30], [10, 30]], "shape_type": "polygon", "group_id": 1},
        {"label": "car", "points": [[40, 10], [50, 10], [50, 20], [40, 20]], "shape_type": "polygon", "group_id": 1},
        {"label": "sign", "points": [[60, 40], [70, 50]], "shape_type": "rectangle", "group_id": None},
        {"label": "ball", "points": [[20, 45], [28, 45]], "shape_type": "circle"},
        {"label": "road", "points": [[0, 59], [79, 59]], "shape_type": "line"},
    ]
    (folder / "scene.json").write_text(json.dumps({"imagePath": "scene.png", "imageHeight": H, "imageWidth": W,
                                                   "shapes": shapes}))
    result = convert_dataset("labelme", folder, tmp_path / "out.json")
    assert result.instances == 3 and sorted(result.categories) == ["ball", "car", "sign"]
    assert len(result.skipped) == 1 and "line" in result.skipped[0]
    car = next(a for a in json.loads((tmp_path / "out.json").read_text())["annotations"] if a["category_id"] == 1)
    assert len(car["segmentation"]) == 2  # one object, two parts
    read = masks_by_label(tmp_path / "out.json", folder)
    assert read["car"][0][:, :35].sum() > 300 and read["car"][0][:, 38:].sum() > 80  # both parts
    assert read["sign"][0].sum() == pytest.approx(100, abs=25)
    assert read["ball"][0].sum() == pytest.approx(np.pi * 64, rel=0.2)


def test_yolo_polygons_with_names_from_the_data_yaml(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    blank(images, "a.jpg")
    blank(images, "b.jpg")  # no label file: an image without instances
    labels.mkdir()
    (labels / "a.txt").write_text("1 0.125 0.1667 0.375 0.1667 0.375 0.5 0.125 0.5\n"
                                  "0 0.5 0.5 0.75 0.5 0.75 0.8333\n"
                                  "5 0.1 0.1 0.2 0.2 0.3 0.1\n")  # an unknown class
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: person\n  1: car\n")
    result = convert_dataset("yolo", labels, tmp_path / "out.json", images=images, names=tmp_path / "data.yaml")
    assert (result.images, result.instances, result.categories) == (2, 2, ["person", "car"])
    assert len(result.skipped) == 1 and "a.txt:3" in result.skipped[0] and "holes" in result.notes[0]
    read = masks_by_label(tmp_path / "out.json", images)
    car = read["car"][0]
    assert car.sum() == pytest.approx(20 * 20, abs=45) and car[10:30, 10:30].mean() > 0.9  # x 10-30, y 10-30
    assert read["person"][0].sum() == pytest.approx(0.5 * 20 * 20, abs=30)  # a right triangle


def test_names_files_and_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("cat\ndog\n\n")
    assert yolo_names(tmp_path / "names.txt") == ["cat", "dog"]
    (tmp_path / "list.yaml").write_text("names: [a, b, c]\n")
    assert yolo_names(tmp_path / "list.yaml") == ["a", "b", "c"]
    (tmp_path / "bad.yaml").write_text("nc: 2\n")
    with pytest.raises(DatasetError, match="'names' must be"):
        yolo_names(tmp_path / "bad.yaml")
    with pytest.raises(DatasetError, match="no such folder"):
        convert_dataset("labelme", tmp_path / "none", tmp_path / "out.json")
    with pytest.raises(DatasetError, match="give the image folder"):
        convert_dataset("yolo", tmp_path, tmp_path / "out.json")
    run = CliRunner().invoke(app, ["data", "convert", str(tmp_path), "--from", "labelme", "--out", str(tmp_path /
                                   "out.json")])
    assert run.exit_code == 2 and "nothing to convert" in run.output
    assert not (tmp_path / "out.json").exists()


def test_convert_command_writes_what_training_reads(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    blank(images, "a.png")
    masks.mkdir()
    cv2.imwrite(str(masks / "a.png"), (rectangle(5, 5, 25, 45) * 3).astype(np.uint8))
    out = tmp_path / "coco.json"
    run = CliRunner().invoke(app, ["data", "convert", str(masks), "--from", "masks", "--images", str(images),
                                   "--class-name", "pedestrian", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "1 images, 1 instances, 1 classes (pedestrian)" in run.output
    before = out.read_bytes()
    again = CliRunner().invoke(app, ["data", "convert", str(masks), "--from", "masks", "--images", str(images),
                                     "--class-name", "other", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output and out.read_bytes() == before
    check = CliRunner().invoke(app, ["data", "check", str(out), "--images", str(images), "--out",
                                     str(tmp_path / "check")])
    assert check.exit_code == 0, check.output
