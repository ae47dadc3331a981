"""Outputs never clobber: a new numbered run folder unless --out or --exist-ok, and no output ever
replaces an input (an overlay over its image, a video over its source, a converter's JSON over a
file it reads), --overwrite or not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparseinst_cli.cli.app import app
from sparseinst_cli.data.images import write_image
from sparseinst_cli.errors import SparseInstError
from sparseinst_cli.files import new_run_folder, refuse_overwriting

from .conftest import random_checkpoint, shapes_image, write_clip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("outputs") / "model.safetensors", "demo",
                             ["input.min_size_test=96", "input.max_size_test=128"], seed=1)


def test_run_folders_are_numbered(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "predict"
    assert [new_run_folder(base) for _ in range(3)] == [base, base.with_name("predict2"), base.with_name("predict3")]
    assert all(p.is_dir() for p in (base, base.with_name("predict2"), base.with_name("predict3")))
    assert new_run_folder(base, exist_ok=True) == base
    (tmp_path / "runs" / "file").write_text("")
    with pytest.raises(SparseInstError, match="is a file"):
        new_run_folder(tmp_path / "runs" / "file" / "predict")


def test_refuse_overwriting_sees_links_and_other_spellings(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(source)
    refuse_overwriting([tmp_path / "b.png"], [source])  # a new file is fine
    for output in (source, tmp_path / "link.png", tmp_path / "sub" / ".." / "a.png"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(SparseInstError, match="is an input of this command"):
            refuse_overwriting([output], [source])


def test_a_second_predict_gets_its_own_folder(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "photo.png"
    write_image(image, shapes_image(96, 128))
    runner = CliRunner()
    first = runner.invoke(app, ["predict", str(image), "--weights", str(checkpoint)])
    assert first.exit_code == 0, first.output
    before = tree(tmp_path / "runs" / "predict")
    assert {"photo.png", "results.json", "instances.json", "summary.json"} <= set(before)
    second = runner.invoke(app, ["predict", str(image), "--weights", str(checkpoint), "--conf", "0"])
    assert second.exit_code == 0, second.output
    assert "runs/predict2/results.json" in second.output
    assert tree(tmp_path / "runs" / "predict") == before  # the first run's files are untouched
    again = runner.invoke(app, ["predict", str(image), "--weights", str(checkpoint), "--exist-ok"])
    assert again.exit_code == 0 and not (tmp_path / "runs" / "predict3").exists()
    timed = [runner.invoke(app, ["time", "--weights", str(checkpoint), "--runs", "1", "--warmup", "0", "--sizes",
                                 "64"]) for _ in range(2)]
    assert all(t.exit_code == 0 for t in timed), timed[0].output
    assert (tmp_path / "runs" / "time" / "timing.json").is_file()
    assert (tmp_path / "runs" / "time2" / "timing.json").is_file()


def test_an_overlay_never_replaces_its_image(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write_image(folder / "a.png", shapes_image(96, 128))
    write_image(folder / "b.png", shapes_image(96, 128, seed=1))
    before = tree(folder)
    run = CliRunner().invoke(app, ["predict", str(folder), "--weights", str(checkpoint), "--out", str(folder)])
    assert run.exit_code == 2
    assert "a.png: is an input of this command and would be overwritten" in " ".join(run.output.split())
    assert tree(folder) == before  # nothing replaced, nothing added
    flat = CliRunner().invoke(app, ["predict", str(folder / "a.png"), "--weights", str(checkpoint), "--out",
                                    str(folder), "--exist-ok"])
    assert flat.exit_code == 2 and tree(folder) == before


def test_an_annotated_video_never_replaces_its_source(checkpoint: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    before = digest(clip)
    run = CliRunner().invoke(app, ["predict", str(clip), "--weights", str(checkpoint), "--out", str(tmp_path)])
    assert run.exit_code == 2 and "clip.mp4: is an input" in " ".join(run.output.split())
    assert digest(clip) == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_an_iam_figure_never_replaces_its_image(checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    write_image(image, shapes_image(96, 128))
    before = digest(image)
    run = CliRunner().invoke(app, ["viz-iam", str(image), "--weights", str(checkpoint), "--out", str(image),
                                   "--conf", "0"])
    assert run.exit_code == 2 and "is an input" in run.output
    assert digest(image) == before


def test_a_converter_never_replaces_a_file_it_reads(tmp_path: Path) -> None:
    folder = tmp_path / "labelme"
    write_image(folder / "scene.png", shapes_image(60, 80))
    record = {"imagePath": "scene.png", "imageHeight": 60, "imageWidth": 80,
              "shapes": [{"label": "car", "points": [[10, 10], [30, 10], [30, 30]], "shape_type": "polygon"}]}
    (folder / "scene.json").write_text(json.dumps(record))
    before = tree(folder)
    for extra in ([], ["--overwrite"]):
        run = CliRunner().invoke(app, ["data", "convert", str(folder), "--from", "labelme", "--out",
                                       str(folder / "scene.json"), *extra])
        assert run.exit_code == 2 and "is an input" in run.output, run.output
        assert tree(folder) == before
    names = tmp_path / "names.txt"
    names.write_text("car\n")
    (tmp_path / "labels").mkdir()
    run = CliRunner().invoke(app, ["data", "convert", str(tmp_path / "labels"), "--from", "yolo", "--images",
                                   str(folder), "--names", str(names), "--out", str(names), "--overwrite"])
    assert run.exit_code == 2 and names.read_text() == "car\n"


def test_eval_and_tide_write_new_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mask = [[10, 10, 40, 10, 40, 40, 10, 40]]
    truth = {"images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
             "categories": [{"id": 1, "name": "thing"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask, "area": 900.0,
                              "bbox": [10, 10, 30, 30], "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects(mask, 64, 64))
    rle["counts"] = rle["counts"].decode()
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "segmentation": rle,
                                                  "score": 0.9}]))
    runner = CliRunner()
    for _ in range(2):
        assert runner.invoke(app, ["eval", "--results", "r.json", "--data", "gt.json"]).exit_code == 0
        assert runner.invoke(app, ["tide", "--results", "r.json", "--data", "gt.json"]).exit_code == 0
    for name in ("eval", "eval2"):
        assert json.loads((tmp_path / "runs" / name / "eval.json").read_text())["AP50"] == 100.0
    assert (tmp_path / "runs" / "tide2" / "tide.json").is_file()


def test_a_failed_command_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "predict").mkdir(parents=True)  # an earlier run's folder stays
    write_image(tmp_path / "photo.png", shapes_image(32, 32))
    for command in (["predict", "photo.png", "--weights", "missing.safetensors"],
                    ["tide", "--weights", "missing.safetensors", "--data", "missing.json"],
                    ["viz-iam", "photo.png", "--weights", "missing.safetensors"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["predict"]
    (tmp_path / "runs" / "predict").rmdir()
    (tmp_path / "runs").rmdir()
    assert CliRunner().invoke(app, ["predict", "photo.png", "--weights", "missing.safetensors"]).exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # not even runs/
