"""Bad input across every command: each case asserts the documented exit code, one message that
names the file or field, and no traceback. Exit codes: 2 bad input (nothing done), 1 done in
part or the work could not finish, 0 done."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.cli.app import app
from sparseinst_cli.data.coco import encode_rle
from sparseinst_cli.data.demo_data import generate_demo_dataset
from sparseinst_cli.inference.predictor import Predictor
from sparseinst_cli.recipe import load_recipe

from .conftest import SMALL_MODEL, TINY_TRAINING, random_checkpoint

SIZE = 64


@dataclass
class Env:
    """Good inputs to spoil, made once: a demo dataset, a checkpoint, a results file, a short run."""

    root: Path
    gt: Path
    images: Path
    image: Path
    weights: Path
    results: Path
    run: Path
    train_recipe: list[str]

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / "cases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def gt_with(self, name: str, change: Callable[[dict], None]) -> Path:
        data = json.loads(self.gt.read_text())
        change(data)
        return self.file(name, json.dumps(data))

    def results_with(self, name: str, change: Callable[[dict], None]) -> Path:
        records = json.loads(self.results.read_text())
        change(records[0])
        return self.file(name, json.dumps(records))

    def run_copy(self, name: str) -> Path:
        import shutil

        target = self.root / "cases" / name
        shutil.copytree(self.run, target)
        return target


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad")
    demo = generate_demo_dataset(root / "demo", train_images=4, val_images=2, size=(SIZE, SIZE))
    weights = random_checkpoint(root / "model.safetensors", "r50_giam", [*SMALL_MODEL, "model.num_classes=4",
                                "input.min_size_test=64", "input.max_size_test=64"], seed=1,
                                categories=json.loads(demo.val_json.read_text())["categories"])
    runner = CliRunner()
    results = root / "eval"
    run = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(demo.val_json), "--images",
                              str(demo.val_dir), "--out", str(results)])
    assert run.exit_code == 0, run.output
    train_recipe = [*(a for item in TINY_TRAINING for a in ("--set", item)),
                    "--set", f"data.train.annotations={demo.train_json}", "--set", f"data.train.images={demo.train_dir}",
                    "--set", "train.solver.batch_size=2"]
    trained = runner.invoke(app, ["train", "r50_giam", "--out", str(root / "run"), *train_recipe,
                                  "--set", "train.solver.max_iter=2"])
    assert trained.exit_code == 0, trained.output
    return Env(root, demo.val_json, demo.val_dir, demo.val_dir / "000000.png", weights, results / "results.json",
               root / "run", train_recipe)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixels are not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def folder_of(env: Env, name: str, files: dict[str, bytes]) -> Path:
    for file_name, content in files.items():
        env.file(f"{name}/{file_name}", content)
    return env.root / "cases" / name


def labelme_folder(env: Env, name: str, points: list, *, kind: str = "polygon", image: bool = True) -> Path:
    """A LabelMe folder with one 64x64 image and one shape of these points."""
    folder = env.root / "cases" / name
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        (folder / "scene.png").write_bytes(png(np.zeros((SIZE, SIZE, 3), np.uint8)))
    record = {"imagePath": "scene.png", "imageHeight": SIZE, "imageWidth": SIZE,
              "shapes": [{"label": "thing", "points": points, "shape_type": kind}]}
    (folder / "scene.json").write_text(json.dumps(record))  # NaN and Infinity as Python's json writes them
    return folder


def yolo_folders(env: Env, name: str) -> Path:
    """YOLO labels for one image, and a label file whose image is missing; returns the labels folder."""
    root = env.root / "cases" / name
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "images" / "a.png").write_bytes(png(np.zeros((SIZE, SIZE, 3), np.uint8)))
    (root / "labels" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (root / "labels" / "orphan.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (root / "names.txt").write_text("thing\n")
    return root / "labels"


def mask_folders(env: Env, name: str) -> Path:
    """Instance-mask PNGs for one image, plus a text file and a mask whose image is missing."""
    masks, images = env.root / "cases" / name, env.root / "cases" / f"{name}_images"
    for folder in (masks, images):
        folder.mkdir(parents=True, exist_ok=True)
    ids = np.zeros((SIZE, SIZE), np.uint8)
    ids[5:20, 5:20] = 1
    (images / "a.png").write_bytes(png(np.zeros((SIZE, SIZE, 3), np.uint8)))
    (masks / "a.png").write_bytes(png(ids))
    (masks / "notes.txt").write_text("how these were made\n")
    (masks / "lost.png").write_bytes(png(ids))
    return masks


def nan_checkpoint(env: Env) -> Path:
    """A native checkpoint of the training recipe's architecture with NaN weights."""
    path = env.root / "cases" / "nan.safetensors"
    if not path.exists():
        recipe = load_recipe("r50_giam", [a for a in env.train_recipe if a != "--set" and "data." not in a])
        model = Predictor.from_recipe(recipe).model
        state = {k: v.clone() for k, v in model.state_dict().items()}
        next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
        save_checkpoint(path, state, recipe, [{"id": i + 1, "name": f"c{i}"} for i in range(recipe.model.num_classes)])
    return path


def a_checkpoint_with(env: Env, name: str, metadata: dict[str, str]) -> Path:
    path = env.root / "cases" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "sparseinst", "format_version": "1", **metadata})
    return path


# (id, argv builder, exit code, text the message must contain)
CASES: list[tuple[str, Callable[[Env], list[str]], int, str]] = [
    # predict
    ("predict-missing-weights", lambda e: ["predict", str(e.image), "--weights", "nope.safetensors"], 2, "nope.safetensors"),
    ("predict-text-weights", lambda e: ["predict", str(e.image), "--weights", str(e.file("t.safetensors", "hello"))], 2,
     "not a safetensors checkpoint"),
    ("predict-out-is-a-file", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--out",
                                         str(e.file("outfile", "x"))], 2, "is a file"),
    ("predict-out-under-a-file", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--out",
                                            str(e.file("outfile2", "x") / "sub")], 2, "is a file"),
    ("predict-missing-image", lambda e: ["predict", "nothing.png", "--weights", str(e.weights)], 2, "nothing.png"),
    ("predict-corrupt-among-good", lambda e: ["predict", str(folder_of(e, "mixed", {
        "bad.png": b"not an image", "good.png": png(np.zeros((32, 48, 3), np.uint8))})), "--weights", str(e.weights),
        "--out", str(e.root / "cases" / "mixed_out")], 1, "bad.png"),
    ("predict-one-pixel-strip", lambda e: ["predict", str(e.file("strip.png", png(np.zeros((1, 400, 3), np.uint8)))),
                                           "--weights", str(e.weights), "--out", str(e.root / "cases" / "s")], 0, "strip"),
    ("predict-huge-header", lambda e: ["predict", str(e.file("huge.png", png_header(60000, 60000))), "--weights",
                                       str(e.weights), "--out", str(e.root / "cases" / "h")], 1, "60000x60000"),
    ("predict-bad-device", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--device", "banana"], 2,
     "--device"),
    ("predict-onnx-on-torch", lambda e: ["predict", str(e.image), "--weights", str(e.file("m.onnx", "x"))], 2,
     "--backend onnxruntime"),
    ("predict-unknown-recipe", lambda e: ["predict", str(e.image), "--recipe", "no_such_recipe"], 2, "no_such_recipe"),
    ("predict-zero-pixel-std", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--set",
                                          "input.pixel_std=[0,0,0]"], 2, "pixel_std"),
    ("predict-bad-dtype", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--dtype", "fp64"], 2,
     "--dtype"),
    ("predict-bad-backend", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--backend", "trt"], 2,
     "--backend"),
    ("predict-weights-and-recipe", lambda e: ["predict", str(e.image), "--weights", str(e.weights), "--recipe", "demo"],
     2, "weights"),
    ("predict-metadata-not-json", lambda e: ["predict", str(e.image), "--weights", str(a_checkpoint_with(
        e, "meta.safetensors", {"recipe": "{not json", "categories": "[]"}))], 2, "metadata 'recipe'"),
    ("predict-categories-without-names", lambda e: ["predict", str(e.image), "--weights", str(a_checkpoint_with(
        e, "cats.safetensors", {"recipe": json.dumps(load_recipe("demo").dump()), "categories": '[{"id": 1}]'}))], 2,
     "categories"),
    # eval
    ("eval-missing-gt", lambda e: ["eval", "--data", "missing.json", "--results", str(e.results)], 2, "missing.json"),
    ("eval-gt-not-json", lambda e: ["eval", "--data", str(e.file("gt.json", "{oops")), "--results", str(e.results)], 2,
     "not valid JSON"),
    ("eval-gt-is-a-folder", lambda e: ["eval", "--data", str(e.images), "--results", str(e.results)], 2, "val"),
    ("eval-missing-results", lambda e: ["eval", "--data", str(e.gt), "--results", "none.json"], 2, "none.json"),
    ("eval-results-not-json", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.file("r.json", "]["))], 2,
     "not valid JSON"),
    ("eval-results-not-a-list", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.file("d.json", "{}"))], 2,
     "JSON list"),
    ("eval-results-nan-score", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "nan.json", lambda r: r.update(score=float("nan"))))], 2, "score"),
    ("eval-results-text-score", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "txt.json", lambda r: r.update(score="high")))], 2, "score"),
    ("eval-results-bad-size", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "size.json", lambda r: r["segmentation"].update(size="64x64")))], 2, "RLE size"),
    ("eval-results-bad-rle", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "rle.json", lambda r: r["segmentation"].update(counts="~~~~")))], 2, "RLE"),
    ("eval-results-unknown-image", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "img.json", lambda r: r.update(image_id=999)))], 2, "image id 999"),
    ("eval-results-unknown-category", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "cat.json", lambda r: r.update(category_id=77)))], 2, "category id 77"),
    ("eval-results-missing-field", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results_with(
        "field.json", lambda r: r.pop("score")))], 2, "needs"),
    ("eval-size-zero", lambda e: ["eval", "--data", str(e.gt), "--weights", str(e.weights), "--images", str(e.images),
                                  "--size", "0"], 2, "--size"),
    ("eval-size-negative", lambda e: ["eval", "--data", str(e.gt), "--weights", str(e.weights), "--images",
                                      str(e.images), "--size", "-5"], 2, "--size"),
    ("eval-missing-image-folder", lambda e: ["eval", "--data", str(e.gt), "--weights", str(e.weights), "--images",
                                             "no_dir"], 2, "no_dir"),
    ("eval-weights-without-images", lambda e: ["eval", "--data", str(e.gt), "--weights", str(e.weights)], 2, "--images"),
    ("eval-out-is-a-file", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.results), "--out",
                                      str(e.file("evalout", "x"))], 2, "is a file"),
    ("eval-gt-wrong-size-rle", lambda e: ["eval", "--data", str(e.gt_with("wrongrle.json", lambda d: d["annotations"][0]
        .update(segmentation=encode_rle(np.ones((SIZE, SIZE + 3), np.uint8))))), "--results", str(e.results),
        "--out", str(e.root / "cases" / "e1")], 0, "disagrees with the image"),
    ("eval-gt-nan-area", lambda e: ["eval", "--data", str(e.gt_with("nanarea.json", lambda d: d["annotations"][0]
        .update(area=float("nan")))), "--results", str(e.results), "--out", str(e.root / "cases" / "e2")], 0, "area"),
    ("eval-gt-negative-box", lambda e: ["eval", "--data", str(e.gt_with("negbox.json", lambda d: d["annotations"][0]
        .update(bbox=[0, 0, -5, 3]))), "--results", str(e.results), "--out", str(e.root / "cases" / "e3")], 0, "bbox"),
    ("eval-gt-two-point-polygon", lambda e: ["eval", "--data", str(e.gt_with("poly2.json", lambda d: d["annotations"][0]
        .update(segmentation=[[1, 1, 5, 5]]))), "--results", str(e.results), "--out", str(e.root / "cases" / "e4")], 0,
     "fewer than 6"),
    ("eval-gt-nan-polygon", lambda e: ["eval", "--data", str(e.gt_with("nanpoly.json", lambda d: d["annotations"][0]
        .update(segmentation=[[1, 1, float("nan"), 5, 9, 9]]))), "--results", str(e.results), "--out",
        str(e.root / "cases" / "e5")], 0, "lists of numbers"),
    ("eval-gt-huge-polygon", lambda e: ["eval", "--data", str(e.gt_with("bigpoly.json", lambda d: d["annotations"][0]
        .update(segmentation=[[0, 0, 1e7, 0, 1e7, 1e7]]))), "--results", str(e.results), "--out",
        str(e.root / "cases" / "e6")], 0, "far outside"),
    ("eval-gt-string-image-ids", lambda e: ["eval", "--data", str(e.gt_with("strid.json", lambda d: [
        i.update(id=str(i["id"])) for i in d["images"]])), "--results", str(e.results)], 2, "no usable images"),
    # tide
    ("tide-no-sources", lambda e: ["tide", "--data", str(e.gt)], 2, "--results"),
    ("tide-unknown-image", lambda e: ["tide", "--data", str(e.gt), "--results", str(e.results_with(
        "timg.json", lambda r: r.update(image_id=555)))], 2, "image id 555"),
    ("tide-names-count", lambda e: ["tide", "--data", str(e.gt), "--results", str(e.results), "--names", "a,b"], 2,
     "--names"),
    ("tide-thresholds", lambda e: ["tide", "--data", str(e.gt), "--results", str(e.results), "--pos-threshold", "0.2",
                                   "--background-threshold", "0.5"], 2, "--background-threshold"),
    ("tide-out-is-a-file", lambda e: ["tide", "--data", str(e.gt), "--results", str(e.results), "--out",
                                      str(e.file("tideout", "x"))], 2, "is a file"),
    ("tide-nan-score", lambda e: ["tide", "--data", str(e.gt), "--results", str(e.results_with(
        "tnan.json", lambda r: r.update(score=float("nan"))))], 2, "score"),
    # viz-iam
    ("viz-iam-out-not-an-image", lambda e: ["viz-iam", str(e.image), "--weights", str(e.weights), "--out",
                                            str(e.root / "cases" / "x.txt")], 2, ".png"),
    ("viz-iam-missing-image", lambda e: ["viz-iam", "missing.png", "--weights", str(e.weights)], 2, "missing.png"),
    ("viz-iam-dataset-without-images", lambda e: ["viz-iam", "--dataset", str(e.gt), "--weights", str(e.weights)], 2,
     "--images"),
    ("viz-iam-channels-out-of-range", lambda e: ["viz-iam", "--dataset", str(e.gt), "--images", str(e.images),
                                                 "--weights", str(e.weights), "--channels", "0-99", "--out",
                                                 str(e.root / "cases" / "m.png")], 2, "IAM channels"),
    ("viz-iam-channels-text", lambda e: ["viz-iam", "--dataset", str(e.gt), "--images", str(e.images), "--weights",
                                         str(e.weights), "--channels", "abc"], 2, "--channels"),
    ("viz-iam-top-k-zero", lambda e: ["viz-iam", str(e.image), "--weights", str(e.weights), "--top-k", "0", "--out",
                                      str(e.root / "cases" / "k.png")], 2, "--top-k"),
    ("viz-iam-nothing-above-threshold", lambda e: ["viz-iam", str(e.image), "--weights", str(e.weights),
                                                   "--conf", "0.9999", "--out",
                                                   str(e.root / "cases" / "n.png")], 1, "(--conf)"),
    ("viz-iam-max-images-zero", lambda e: ["viz-iam", "--dataset", str(e.gt), "--images", str(e.images), "--weights",
                                           str(e.weights), "--max-images", "0", "--out", str(e.root / "cases" / "z.png")],
     2, "--max-images"),
    ("predict-show-threshold-above-one", lambda e: ["predict", str(e.image), "--weights", str(e.weights),
                                                    "--show-threshold", "2"], 2, "--show-threshold"),
    ("curves-on-a-file", lambda e: ["curves", str(e.weights)], 2, "not a run directory"),
    ("time-warmup-negative", lambda e: ["time", "--recipe", "demo", "--warmup", "-1", "--out",
                                        str(e.root / "cases" / "t6")], 2, "--warmup"),
    # time
    ("time-negative-threads", lambda e: ["time", "--recipe", "demo", "--threads", "-1", "--out",
                                         str(e.root / "cases" / "t1")], 2, "--threads"),
    ("time-sizes-text", lambda e: ["time", "--recipe", "demo", "--sizes", "abc"], 2, "--sizes"),
    ("time-sizes-tiny", lambda e: ["time", "--recipe", "demo", "--sizes", "8", "--out", str(e.root / "cases" / "t2")],
     2, "--sizes"),
    ("time-out-is-a-file", lambda e: ["time", "--recipe", "demo", "--out", str(e.file("timeout", "x"))], 2, "is a file"),
    ("time-compile-without-fast", lambda e: ["time", "--recipe", "demo", "--plain", "--compile", "--out",
                                             str(e.root / "cases" / "t3")], 2, "--fast"),
    ("time-unknown-recipe", lambda e: ["time", "--recipe", "no_such", "--out", str(e.root / "cases" / "t4")], 2,
     "no_such"),
    ("time-image-missing", lambda e: ["time", "--recipe", "demo", "--image", "gone.png", "--out",
                                      str(e.root / "cases" / "t5")], 2, "gone.png"),
    # convert and export
    ("convert-text-pth", lambda e: ["convert", str(e.file("t.pth", "not a checkpoint")), str(e.root / "cases" /
                                    "o.safetensors"), "--recipe", "r50_giam"], 2, "t.pth"),
    ("convert-output-suffix", lambda e: ["convert", str(e.file("t2.pth", "x")), str(e.root / "cases" / "o.txt"),
                                         "--recipe", "r50_giam"], 2, ".safetensors"),
    ("convert-onto-its-source", lambda e: ["convert", str(e.weights), str(e.weights), "--recipe", "r50_giam"], 2,
     "input of this command"),
    ("convert-missing-source", lambda e: ["convert", "gone.pth", str(e.root / "cases" / "o2.safetensors"), "--recipe",
                                          "r50_giam"], 2, "gone.pth"),
    ("export-out-suffix", lambda e: ["export", "onnx", "--weights", str(e.weights), "--out",
                                     str(e.root / "cases" / "m.safetensors")], 2, ".onnx"),
    ("export-missing-weights", lambda e: ["export", "onnx", "--weights", "gone.safetensors"], 2, "gone.safetensors"),
    ("export-size-not-multiple", lambda e: ["export", "onnx", "--weights", str(e.weights), "--size", "65x96", "--out",
                                            str(e.root / "cases" / "m65.onnx")], 2, "multiples of 32"),
    ("export-size-text", lambda e: ["export", "onnx", "--weights", str(e.weights), "--size", "big"], 2, "--size"),
    # train
    ("train-missing-annotations", lambda e: ["train", "r50_giam", "--out", str(e.root / "cases" / "r1"), *e.train_recipe,
                                             "--set", "data.train.annotations=nowhere.json"], 2, "nowhere.json"),
    ("train-out-is-a-file", lambda e: ["train", "r50_giam", "--out", str(e.file("runfile", "x")), *e.train_recipe], 2,
     "is a file"),
    ("train-tensorboard-missing", lambda e: ["train", "r50_giam", "--out", str(e.root / "cases" / "r2"),
                                             *e.train_recipe, "--set", "train.tensorboard=true"], 2, "tensorboard"),
    ("train-infinite-lr", lambda e: ["train", "r50_giam", "--out", str(e.root / "cases" / "r3"), *e.train_recipe,
                                     "--set", "train.solver.lr=inf"], 2, "train.solver.lr"),
    ("train-bad-device", lambda e: ["train", "r50_giam", "--out", str(e.root / "cases" / "r4"), *e.train_recipe,
                                    "--device", "banana"], 2, "--device"),
    ("train-existing-run", lambda e: ["train", "r50_giam", "--out", str(e.run), *e.train_recipe], 2, "--resume"),
    ("train-resume-nothing", lambda e: ["train", "--out", str(e.root / "cases" / "empty"), "--resume"], 2,
     "recipe.json"),
    ("train-resume-text-state", lambda e: ["train", "--out", str(_spoil(e.run_copy("s1"), "last.pt", b"text")),
                                           "--resume"], 2, "last.pt"),
    ("train-resume-truncated-state", lambda e: ["train", "--out", str(_spoil(
        e.run_copy("s2"), "last.pt", (e.run / "last.pt").read_bytes()[:1000])), "--resume"], 2, "last.pt"),
    ("train-resume-incomplete-state", lambda e: ["train", "--out", str(_incomplete_state(e.run_copy("s3"))),
                                                 "--resume"], 2, "missing"),
    ("train-resume-truncated-recipe", lambda e: ["train", "--out", str(_spoil(e.run_copy("s4"), "recipe.json",
                                                                              b'{"model": {')), "--resume"], 2,
     "recipe.json"),
    ("train-resume-shape-change", lambda e: ["train", "--out", str(e.run_copy("s5")), "--resume", "--set",
                                             "model.decoder.inst_width=48"], 2, "does not fit"),
    ("train-init-from-and-resume", lambda e: ["train", "--out", str(e.run), "--resume", "--init-from",
                                              str(e.weights)], 2, "--init-from"),
    # data, curves, recipes, components
    ("demo-data-over-user-data", lambda e: ["demo-data", str(folder_of(e, "mine", {"train.json": b'{"images": []}'}))],
     2, "train.json"),
    ("demo-data-onto-a-file", lambda e: ["demo-data", str(e.file("demofile", "x"))], 2, "is a file"),
    ("curves-not-a-run", lambda e: ["curves", str(e.root / "cases")], 2, "metrics"),
    ("curves-out-not-png", lambda e: ["curves", str(e.run), "--out", str(e.root / "cases" / "c.txt")], 2, ".png"),
    ("recipes-unknown", lambda e: ["recipes", "no_such_recipe"], 2, "no_such_recipe"),
    ("recipes-bad-override", lambda e: ["recipes", "demo", "--set", "model"], 2, "--set"),
    ("components-unknown-family", lambda e: ["components", "widgets"], 2, "widgets"),
    # hang: a non-finite or far coordinate in any reader is one skipped object, never a hang
    ("data-convert-labelme-nan-point", lambda e: ["data", "convert", str(labelme_folder(e, "lm_nan", [
        [float("nan"), 1], [20, 5], [20, 20]])), "--from", "labelme", "--out", str(e.root / "cases" / "lm_nan.json")],
     0, "lists of numbers"),
    ("data-convert-labelme-far-point", lambda e: ["data", "convert", str(labelme_folder(e, "lm_far", [
        [1e12, 1], [20, 5], [20, 20]])), "--from", "labelme", "--out", str(e.root / "cases" / "lm_far.json")],
     0, "far outside"),
    ("data-convert-labelme-infinite-circle", lambda e: ["data", "convert", str(labelme_folder(e, "lm_inf", [
        [10, 10], [float("inf"), 10]], kind="circle")), "--from", "labelme", "--out",
        str(e.root / "cases" / "lm_inf.json")], 0, "lists of numbers"),
    # silent: everything left out is said
    ("data-convert-yolo-label-without-image", lambda e: ["data", "convert", str(yolo_folders(e, "yolo_orphan")),
                                                         "--from", "yolo", "--images",
                                                         str(e.root / "cases" / "yolo_orphan" / "images"), "--names",
                                                         str(e.root / "cases" / "yolo_orphan" / "names.txt"), "--out",
                                                         str(e.root / "cases" / "yolo_orphan.json")], 0,
     "orphan.txt: no image orphan.* in"),
    ("data-convert-labelme-image-missing", lambda e: ["data", "convert", str(labelme_folder(
        e, "lm_noimage", [[1, 1], [20, 5], [20, 20]], image=False)), "--from", "labelme", "--out",
        str(e.root / "cases" / "lm_noimage.json")], 2, "its image 'scene.png' is not at"),
    ("data-convert-mask-folder-non-image", lambda e: ["data", "convert", str(mask_folders(e, "masks_extra")),
                                                      "--from", "masks", "--images",
                                                      str(e.root / "cases" / "masks_extra_images"), "--out",
                                                      str(e.root / "cases" / "masks_extra.json")], 0,
     "notes.txt: not an image, in the mask folder"),
    ("data-convert-mask-without-image", lambda e: ["data", "convert", str(mask_folders(e, "masks_orphan")),
                                                   "--from", "masks", "--images",
                                                   str(e.root / "cases" / "masks_orphan_images"), "--out",
                                                   str(e.root / "cases" / "masks_orphan.json")], 0,
     "lost.png: no image lost.* in"),
    ("data-check-duplicate-annotation-ids", lambda e: ["data", "check", str(e.gt_with("dupids.json", lambda d: [
        a.update(id=5) for a in d["annotations"][:2]])), "--out", str(e.root / "cases" / "dup")], 1,
     "id 5 is used by another annotation"),
    ("tide-bad-ground-truth-is-listed", lambda e: ["tide", "--data", str(e.gt_with("tidegt.json", lambda d: d[
        "annotations"][0].update(segmentation=[[1, 1, 5, 5]]))), "--results", str(e.results), "--out",
        str(e.root / "cases" / "t_gt")], 0, "fewer than 6"),
    # misleading: each message says what is wrong
    ("predict-missing-camera", lambda e: ["predict", "7", "--weights", str(e.weights), "--out",
                                          str(e.root / "cases" / "cam")], 1, "camera 7: cannot be opened"),
    ("predict-refused-stream", lambda e: ["predict", "rtsp://127.0.0.1:9/live", "--weights", str(e.weights), "--out",
                                          str(e.root / "cases" / "stream")], 1, "the stream cannot be opened"),
    ("data-convert-labelme-not-utf8", lambda e: ["data", "convert", str(folder_of(e, "lm_latin1", {
        "a.json": '{"imagePath": "caf\u00e9.png", "shapes": []}'.encode("latin-1")})), "--from", "labelme",
        "--out", str(e.root / "cases" / "lm_latin1.json")], 2, "not UTF-8 text"),
    ("train-init-from-nan-weights", lambda e: ["train", "r50_giam", "--out", str(e.root / "cases" / "nan_run"),
                                               *e.train_recipe, "--init-from", str(nan_checkpoint(e))], 2,
     "hold NaN or infinite values"),
    ("predict-folder-as-weights", lambda e: ["predict", str(e.image), "--weights", str(e.images)], 2,
     "is a folder, not a file"),
    ("convert-folder-as-source", lambda e: ["convert", str(e.images) + "/", str(e.root / "cases" / "o.safetensors"),
                                            "--recipe", "r50_giam"], 2, "is a folder, not a file"),
    ("convert-text-as-pth", lambda e: ["convert", str(e.file("notes.pth", "hello")), str(e.root / "cases" /
                                       "o2.safetensors"), "--recipe", "r50_giam"], 2, "not a PyTorch checkpoint"),
    ("train-folder-as-recipe", lambda e: ["train", str(e.images), "--out", str(e.root / "cases" / "dir_recipe")], 2,
     "is a folder, not a recipe file"),
    ("eval-folder-as-results", lambda e: ["eval", "--data", str(e.gt), "--results", str(e.images)], 2,
     "is a folder, not a results file"),
    ("export-onnx-size-zero", lambda e: ["export", "onnx", "--weights", str(e.weights), "--size", "0x0", "--out",
                                         str(e.root / "cases" / "zero.onnx")], 2, "positive multiples of 32"),
    ("export-int8-calibration-file", lambda e: ["export", "int8", "--weights", str(e.weights), "--calibration",
                                                str(e.image), "--out", str(e.root / "cases" / "c.int8.onnx")], 2,
     "is a file, not a folder"),
]


def _spoil(run: Path, name: str, content: bytes) -> Path:
    (run / name).write_bytes(content)
    return run


def _incomplete_state(run: Path) -> Path:
    torch.save({"step": 1}, run / "last.pt")
    return run


def test_the_table_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    commands = {case[0].split("-")[0] for case in CASES}
    assert {"predict", "eval", "tide", "viz", "time", "convert", "export", "train", "demo", "curves", "recipes",
            "components"} <= commands


@pytest.mark.parametrize(("argv", "code", "needle"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input(env: Env, argv, code: int, needle: str) -> None:
    result = CliRunner().invoke(app, argv(env))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    assert needle in result.output, result.output


def test_good_images_are_predicted_next_to_bad_ones(env: Env) -> None:
    out = env.root / "cases" / "mixed_results"
    folder = folder_of(env, "mixed2", {"a_bad.png": b"not an image", "b_good.png": png(np.zeros((32, 48, 3), np.uint8)),
                                       "c_huge.png": png_header(60000, 60000)})
    result = CliRunner().invoke(app, ["predict", str(folder), "--recipe", "demo", "--out", str(out)])
    assert result.exit_code == 1 and "2 input(s) failed" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(i["file_name"]).name for i in summary["images"] if not i["error"]] == ["b_good.png"]
    assert summary["failed"] == 2 and (out / "b_good.png").is_file() and (out / "results.json").is_file()


def test_a_repaired_ground_truth_scores_like_a_clean_one(env: Env) -> None:
    """NaN areas would move instances between size ranges; recomputed, AP equals the clean file's."""
    clean = CliRunner().invoke(app, ["eval", "--data", str(env.gt), "--results", str(env.results), "--out",
                                     str(env.root / "cases" / "clean")])
    spoiled = env.gt_with("allnan.json", lambda d: [a.update(area=float("nan")) for a in d["annotations"]])
    repaired = CliRunner().invoke(app, ["eval", "--data", str(spoiled), "--results", str(env.results), "--out",
                                        str(env.root / "cases" / "repaired")])
    assert clean.exit_code == repaired.exit_code == 0
    first, second = (json.loads((env.root / "cases" / n / "eval.json").read_text()) for n in ("clean", "repaired"))
    assert {k: first[k] for k in ("AP", "APs", "APm", "APl")} == {k: second[k] for k in ("AP", "APs", "APm", "APl")}
    assert "repaired" in repaired.output
