"""Training on real photos: the 128 COCO images of ``shared/data/coco128``, written as JSON.

    python benchmarks/coco128.py --data ../shared/data/coco128 --out runs/bench/coco128.json
    python benchmarks/coco128.py --variants person --minutes 10

Splits the images deterministically by image id (sorted ids, every fourth to the held-out
split: 96 training, 32 held-out images), trains the ``finetune_lite`` recipe (EfficientNet-Lite0
from its packaged ImageNet weights) for ``--minutes`` of wall time worth of epochs (measured by
a short timing run first, so the schedule completes: cosine decay and EMA both want the whole
run), and reports mask AP / AP50 on the held-out and on the training split (with the ceiling the
evaluation size allows on each, from ``sparseinst data ceiling``), wall time, images/s and the
largest loss spike (the largest ratio of a logged total loss to the median of the 10
records before it, after the warm-up). Variants:

- ``all``: every category of the dataset (71 with instances);
- ``person``: the person category alone (a single-class model);
- ``init_demo``: all categories, starting from a model trained on the demo shapes
  (``--demo-model``, by default ``runs/demo/model.safetensors`` from the README's quick start)
  through ``model.init_from``; its class rows do not match COCO's names and start fresh.

Each run directory (``runs/bench/coco128/VARIANT``) keeps its ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from sparseinst_cli import (
    CocoInstances,
    Evaluation,
    Predictor,
    Trainer,
    evaluate_model,
    keep_freed_memory,
    load_recipe,
    mask_ap,
)
from sparseinst_cli.analysis.coco_eval import ground_truth_index
from sparseinst_cli.analysis.mask_ceiling import mask_ceiling
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.recipe import RecipeBase

HELD_OUT_EVERY = 4  # every fourth image id (in sorted order) is held out: a 3:1 split
RECIPE = "finetune_lite"
SPIKE_WINDOW = 10  # logged records the spike ratio compares against
TIMING_STEPS = 24  # steps of the short run that measures the step time


def split(annotations: Path, out: Path, person_only: bool = False) -> tuple[Path, Path]:
    """Write the training and held-out JSONs (optionally the person category alone)."""
    data = json.loads(annotations.read_text())
    ids = sorted(image["id"] for image in data["images"])
    held_out = set(ids[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY])
    categories = [c for c in data["categories"] if not person_only or c["name"] == "person"]
    kept = {c["id"] for c in categories}
    paths = []
    for name, keep in (("train", set(ids) - held_out), ("heldout", held_out)):
        subset = {
            "images": [i for i in data["images"] if i["id"] in keep],
            "annotations": [a for a in data["annotations"] if a["image_id"] in keep and a["category_id"] in kept],
            "categories": categories,
        }
        path = out / f"{name}{'_person' if person_only else ''}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(subset))
        paths.append(path)
    return paths[0], paths[1]


def largest_spike(records: list[dict], warmup: int) -> float:
    losses = [r["loss"] for r in records if "loss" in r and r["step"] > warmup]
    ratios = [losses[i] / statistics.median(losses[i - SPIKE_WINDOW : i])
              for i in range(SPIKE_WINDOW, len(losses))]
    return round(max(ratios), 3) if ratios else 0.0


def run_variant(name: str, args: argparse.Namespace, images: Path, work: Path) -> dict:
    train_json, heldout_json = split(args.data / "instances_train2017.json", work, person_only=name == "person")
    overrides = [f"data.train.annotations={train_json}", f"data.train.images={images}",
                 f"data.val.annotations={heldout_json}", f"data.val.images={images}", *args.set]
    if name == "init_demo":
        if not args.demo_model.is_file():
            raise SystemExit(f"{args.demo_model}: no demo model; run the README's quick start first or pass --demo-model")
        overrides.append(f'model.init_from="{args.demo_model}"')
    epochs = args.epochs or _epochs_for(args.minutes, overrides, work / f"{name}_timing", len(json.loads(
        train_json.read_text())["images"]))
    recipe = load_recipe(RECIPE, [*overrides, f"train.solver.epochs={epochs}"])
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    trainer = Trainer.from_recipe(recipe, out)
    trainer.run()
    wall = time.perf_counter() - start
    predictor = Predictor.from_checkpoint(out / "model.safetensors")
    train_set = CocoInstances(train_json, images)
    datasets = {"train_split": train_set, "heldout_split": CocoInstances(heldout_json, images)}
    splits = {split: evaluate_model(predictor, dataset) for split, dataset in datasets.items()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in records if "images_per_s" in r]
    result = {
        "variant": name,
        "classes": len(train_set.class_names),
        "train_images": len(train_set),
        "epochs": epochs,
        "steps": trainer.step,
        "wall_minutes": round(wall / 60, 2),
        "images_per_s": round(statistics.median(speeds), 3),
        **{split: {k: evaluation.metrics[k] for k in ("AP", "AP50", "AP75")} for split, evaluation in splits.items()},
        # Labels ignored and all objects pooled (not a mean over classes): the masks apart from the class head.
        **{f"{split}_class_agnostic": _class_agnostic(datasets[split], evaluation) for split, evaluation in splits.items()},
        # What a perfect model could reach at the evaluation size (``sparseinst data ceiling``).
        **{f"{split}_ceiling": _ceiling(path, trainer.recipe) for split, path in
           (("train_split", train_json), ("heldout_split", heldout_json))},
        "largest_loss_spike": largest_spike(records, trainer.recipe.train.solver.warmup_iters),
        "curves": str(out / "curves.png"),
    }
    if trainer.transfer is not None:
        result["init_from"] = {k: v for k, v in trainer.transfer.to_json().items() if k != "class_rows"}
    return result


def _class_agnostic(dataset: CocoInstances, evaluation: Evaluation) -> dict[str, float]:
    metrics = mask_ap(ground_truth_index(dataset), evaluation.results, evaluation.image_ids, class_agnostic=True)
    return {k: metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


def _ceiling(annotations: Path, recipe: RecipeBase) -> dict[str, float]:
    size = (recipe.input.min_size_test, recipe.input.max_size_test)
    metrics = mask_ceiling(annotations, [size], recipe.input.size_divisibility,
                           recipe.inference.mask_threshold).sizes[0].metrics
    return {k: metrics[k] for k in ("AP", "AP50", "AP75")}


def _epochs_for(minutes: float, overrides: list[str], out: Path, train_images: int) -> float:
    """Epochs that fit ``minutes`` of training, from the step time of a short run."""
    batch = load_recipe(RECIPE, overrides).train.solver.batch_size
    recipe = load_recipe(RECIPE, [*overrides, f"train.solver.epochs={TIMING_STEPS * batch / train_images}"])
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"val": None})})
    shutil.rmtree(out, ignore_errors=True)
    trainer = Trainer.from_recipe(recipe, out)
    trainer.run()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    seconds_per_step = (records[-1]["time"] - records[0]["time"]) / (records[-1]["step"] - records[0]["step"])
    shutil.rmtree(out, ignore_errors=True)
    return round(minutes * 60 / seconds_per_step * batch / train_images, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/coco128"))
    parser.add_argument("--variants", default="all,person,init_demo")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget per variant")
    parser.add_argument("--epochs", type=float, default=0.0, help="fixed epochs instead of --minutes")
    parser.add_argument("--demo-model", type=Path, default=Path("runs/demo/model.safetensors"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/coco128"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/coco128.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    images = args.data / "images"
    if not images.is_dir():
        raise SystemExit(f"{images}: no such folder (pass --data, the coco128 folder)")
    report = {"cpu": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "freed_memory_kept": kept, "recipe": RECIPE, "overrides": args.set, "variants": []}
    if args.out.is_file():  # runs of other variants stay; a variant run again replaces its entry
        report["variants"] = json.loads(args.out.read_text()).get("variants", [])
    for name in args.variants.split(","):
        result = {**run_variant(name, args, images, args.work), "minutes_budget": args.minutes}
        report["variants"] = [v for v in report["variants"] if v["variant"] != name] + [result]
        print(json.dumps(result, indent=2), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
