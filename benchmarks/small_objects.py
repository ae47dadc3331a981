"""Small objects: masks drawn at stride 4 against the authors' stride 8, written as JSON.

    python benchmarks/small_objects.py --out runs/bench/small_objects.json
    python benchmarks/small_objects.py --speed-steps 2 --speed-rounds 1 --nuclei-steps 5 --out /tmp/smoke.json
    python benchmarks/small_objects.py --parts nuclei --recipes finetune_small_objects --nuclei-steps 800 \
        --set train.eval_period=200 --out runs/bench/small_objects_800.json

Compares ``finetune_lite`` (masks on the stride-8 grid) with ``finetune_small_objects`` (the same
recipe with ``model.decoder.mask_stride = 4``), in three parts (``--parts``):

- ``ceiling``: the mask AP a perfect model could reach on coco128 at 384 px (``sparseinst data
  ceiling --recipe``), for each recipe's mask grid: AP, AP50, APs and the share of small objects
  within IoU 0.5.
- ``speed``: training images/s of both recipes on coco128 in the same process: after a warm-up
  block each, ``--speed-rounds`` rounds alternate a block of ``--speed-steps`` steps of one recipe
  and of the other (data loading included); the median block of each, and their ratio.
- ``nuclei``: a dense real image. The ``stardist`` wheel ships a 512x512 fluorescence image of
  nuclei with 125 labelled nuclei (2018 Data Science Bowl; Caicedo et al., Nature Methods 2019);
  it is read straight out of the wheel (``pip download stardist --no-deps`` into a temporary
  folder, or ``--stardist-wheel``, or an installed ``stardist``: tensorflow is never needed) and
  written as a one-image COCO dataset into a temporary folder. Each recipe trains
  ``--nuclei-steps`` steps on it at ``--nuclei-size`` px (train and test size) from its packaged
  ImageNet backbone, with the same settings for both: ``num_instances`` and ``max_detections``
  raised to ``--nuclei-instances`` (the recipes' 50 would cap recall at 40%), a cosine schedule
  over the steps. Reported: mask AP, AP50, AP75, APs on the same image (every nucleus is a COCO
  "small" object), the ceiling of each grid there, the AP at each validation (``--set
  train.eval_period=N`` for a curve) and the wall time.

The JSON holds the CPU (``device_name("cpu")``), date, command line and settings.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

from sparseinst_cli import Trainer, keep_freed_memory, load_recipe
from sparseinst_cli.analysis.mask_ceiling import (
    mask_ceiling,
    recipe_mask_stride,
    recipe_settings,
)
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.coco import encode_rle
from sparseinst_cli.data.images import write_image
from sparseinst_cli.engine.build import next_batches
from sparseinst_cli.engine.calibration import calibrate
from sparseinst_cli.recipe import RecipeBase

RECIPES = ("finetune_lite", "finetune_small_objects")
CEILING_SIZE = (384, 512)  # coco128 at finetune_lite's test size (the 384 px)
STARDIST_VERSION = "0.9.2"
NUCLEI_IMAGE, NUCLEI_LABELS = "stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"
METRICS = ("AP", "AP50", "AP75", "APs")
WARMUP_SHARE = 4  # the nuclei runs warm up for a quarter of their steps, at most the recipe's warm-up


# ---------------------------------------------------------------- data


def stardist_files(wheel: Path | None, version: str, work: Path) -> tuple[bytes, bytes]:
    """The bytes of the packaged nuclei image and its label image (16-bit TIFFs)."""
    if wheel is None:
        spec = importlib.util.find_spec("stardist")  # located, not imported: no tensorflow needed
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations))).parent
            if (root / NUCLEI_IMAGE).is_file():
                return (root / NUCLEI_IMAGE).read_bytes(), (root / NUCLEI_LABELS).read_bytes()
        subprocess.run([sys.executable, "-m", "pip", "download", f"stardist=={version}", "--no-deps", "--quiet",
                        "--dest", str(work)], check=True)
        wheel = next(work.glob("stardist-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(NUCLEI_IMAGE), archive.read(NUCLEI_LABELS)


def read_tiff(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit("cannot decode the stardist TIFF")
    return image


def write_nuclei_dataset(image_bytes: bytes, label_bytes: bytes, root: Path) -> tuple[Path, Path, int]:
    """The nuclei image as an 8-bit RGB PNG and its labels as a one-image COCO file (compressed
    RLE, one category "nucleus") under ``root``; returns (json, image folder, instances)."""
    image, labels = read_tiff(image_bytes), read_tiff(label_bytes)
    gray = np.round(image.astype(np.float64) * 255.0 / max(float(image.max()), 1.0)).astype(np.uint8)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "nuclei.png", np.repeat(gray[..., None], 3, axis=2))
    height, width = labels.shape
    annotations = []
    for index, label in enumerate(int(v) for v in np.unique(labels) if v != 0):
        mask = labels == label
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        annotations.append({"id": index + 1, "image_id": 1, "category_id": 1, "segmentation": encode_rle(mask),
                            "area": int(mask.sum()), "bbox": box, "iscrowd": 0})
    data = {"images": [{"id": 1, "file_name": "nuclei.png", "height": height, "width": width}],
            "annotations": annotations, "categories": [{"id": 1, "name": "nucleus"}]}
    path = root / "nuclei.json"
    path.write_text(json.dumps(data))
    return path, folder, len(annotations)


# ---------------------------------------------------------------- parts


def ceiling_of(annotations: Path, recipe: RecipeBase, size: tuple[int, int]) -> dict:
    report = mask_ceiling(annotations, [size], recipe.input.size_divisibility, **recipe_settings(recipe))
    at = report.sizes[0]
    return {"mask_stride": report.mask_stride, "size": list(size), "instances": report.instances,
            **{key: at.metrics[key] for key in ("AP", "AP50", "APs")},
            "small_reached_iou50": at.reached["0.5"]["small"], "all_reached_iou50": at.reached["0.5"]["all"]}


def ceilings(args: argparse.Namespace) -> dict:
    annotations = args.coco128 / "instances_train2017.json"
    return {name: ceiling_of(annotations, load_recipe(name), CEILING_SIZE) for name in args.recipes}


def speed(args: argparse.Namespace, work: Path) -> dict:
    """Training images/s on coco128, the recipes' blocks of steps alternating."""
    overrides = [f"data.train.annotations={args.coco128 / 'instances_train2017.json'}",
                 f"data.train.images={args.coco128 / 'images'}", "data.val=null", "train.solver.epochs=null",
                 "train.solver.max_iter=1000000", "train.checkpoint_period=1000000", *args.set]
    trainers = {name: Trainer.from_recipe(load_recipe(name, overrides), work / f"speed_{name}") for name in args.recipes}
    blocks: dict[str, list[float]] = {name: [] for name in trainers}
    with trainers[args.recipes[0]].data.batches(0, trainers[args.recipes[0]].process) as first, \
            trainers[args.recipes[1]].data.batches(0, trainers[args.recipes[1]].process) as second:
        streams = dict(zip(args.recipes, (first, second)))
        for name, trainer in trainers.items():  # calibration, as a run starts, then a warm-up block
            accumulate = trainer.recipe.train.solver.accumulate
            batches = next_batches(streams[name], accumulate)
            calibrate(trainer.model, batches[0].images.contiguous(memory_format=trainer.memory_format),
                      trainer.fresh_parameters)
            trainer.train_step(batches)
            _block(trainer, streams[name], args.speed_steps)
        for _ in range(args.speed_rounds):
            for name, trainer in trainers.items():
                blocks[name].append(_block(trainer, streams[name], args.speed_steps))
    images_per_s = {name: round(statistics.median(values), 3) for name, values in blocks.items()}
    lite, small = args.recipes
    return {"images_per_s": images_per_s, "blocks_images_per_s": {k: [round(v, 3) for v in vs] for k, vs in blocks.items()},
            "ratio": round(images_per_s[small] / images_per_s[lite], 3),
            "batch_size": trainers[lite].recipe.train.solver.batch_size,
            "precision": trainers[lite].recipe.train.precision}


def _block(trainer: Trainer, batches, steps: int) -> float:
    """Images/s over ``steps`` training steps."""
    solver = trainer.recipe.train.solver
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next_batches(batches, solver.accumulate))
    return steps * solver.batch_size / (time.perf_counter() - start)


def nuclei(args: argparse.Namespace, work: Path) -> dict:
    annotations, images, count = write_nuclei_dataset(*stardist_files(args.stardist_wheel, args.stardist_version, work),
                                                      work / "nuclei")
    size, steps = args.nuclei_size, args.nuclei_steps
    result: dict = {"image": f"stardist {args.stardist_version}: {NUCLEI_IMAGE}", "instances": count,
                    "size": size, "steps": steps, "recipes": {}}
    for name in args.recipes:
        warmup = min(load_recipe(name).train.solver.warmup_iters, steps // WARMUP_SHARE)
        overrides = [f"data.train.annotations={annotations}", f"data.train.images={images}",
                     f"data.val.annotations={annotations}", f"data.val.images={images}",
                     "train.solver.epochs=null", f"train.solver.max_iter={steps}", f"train.solver.warmup_iters={warmup}",
                     f"train.augmentation.min_sizes=[{size}]", f"train.augmentation.max_size={size}",
                     f"input.min_size_test={size}", f"input.max_size_test={size}",
                     f"model.decoder.num_instances={args.nuclei_instances}",
                     f"inference.max_detections={args.nuclei_instances}",
                     "train.checkpoint_period=1000000", "train.eval_period=0", *args.set]
        recipe = load_recipe(name, overrides)
        start = time.perf_counter()
        trainer = Trainer.from_recipe(recipe, work / f"nuclei_{name}")
        outcome = trainer.run()  # validates once, at the end, on the same image
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (trainer.out_dir / "metrics.jsonl").read_text().splitlines()]
        speeds = [r["images_per_s"] for r in records if "images_per_s" in r]
        result["recipes"][name] = {
            "mask_stride": recipe_mask_stride(recipe),
            **{key: outcome.metrics.get(key) for key in METRICS},
            "detections": outcome.metrics.get("detections"),
            "ceiling": ceiling_of(annotations, recipe, (size, size)),
            "curve": [{"step": r["step"], "AP": r["eval"]["AP"]} for r in records if "eval" in r],
            "wall_s": round(wall, 1),
            "images_per_s": round(statistics.median(speeds), 3) if speeds else None,
        }
    return result


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ceiling,speed,nuclei", help="comma-separated: ceiling, speed, nuclei")
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="the stride-8 recipe, then the stride-4 one (one recipe: ceiling and nuclei parts only)")
    parser.add_argument("--coco128", type=Path, default=Path("../shared/data/coco128"))
    parser.add_argument("--speed-steps", type=int, default=12, help="steps per timed block")
    parser.add_argument("--speed-rounds", type=int, default=5, help="timed blocks per recipe, alternating")
    parser.add_argument("--nuclei-steps", type=int, default=400)
    parser.add_argument("--nuclei-size", type=int, default=512, help="train and test size on the nuclei image")
    parser.add_argument("--nuclei-instances", type=int, default=150, help="num_instances and max_detections there")
    parser.add_argument("--stardist-wheel", type=Path, default=None, help="a downloaded stardist wheel")
    parser.add_argument("--stardist-version", default=STARDIST_VERSION)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for both recipes (speed and nuclei parts)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/small_objects.json"))
    args = parser.parse_args()
    args.recipes = args.recipes.split(",")
    parts = args.parts.split(",")
    if len(args.recipes) != 2 and (len(args.recipes) != 1 or "speed" in parts):
        raise SystemExit("--recipes: give two recipes, the stride-8 one first (one only without the speed part)")
    unknown = set(parts) - {"ceiling", "speed", "nuclei"}
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(sorted(unknown))}")
    if {"ceiling", "speed"} & set(parts) and not (args.coco128 / "instances_train2017.json").is_file():
        raise SystemExit(f"{args.coco128}: no instances_train2017.json (pass --coco128, the coco128 folder)")
    kept = keep_freed_memory()  # as the sparseinst command does
    report = {
        "cpu": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "freed_memory_kept": kept, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="sparseinst-small-objects-") as tmp:
        work = Path(tmp)
        if "ceiling" in parts:
            report["ceiling_coco128_384"] = ceilings(args)
            print(json.dumps(report["ceiling_coco128_384"], indent=2), flush=True)
        if "speed" in parts:
            report["speed_coco128"] = speed(args, work)
            print(json.dumps(report["speed_coco128"], indent=2), flush=True)
        if "nuclei" in parts:
            report["nuclei"] = nuclei(args, work)
            print(json.dumps(report["nuclei"], indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
