"""Where one training step's time goes on a dense real-size image, written as JSON.

    python benchmarks/train_step_profile.py --recipe demo --size 608 --objects 100

Draws a scene of ``--objects`` touching ellipses (tests/dense_scene.py) at ``--size`` pixels,
then times each phase of a step (reading and decoding the masks, augmentation, collation,
forward, target downsampling, matching, losses, backward, optimizer) over ``--steps`` steps of
``--batch`` copies of it, median per phase. The target downsampling is also timed the way it
was done before (``F.interpolate`` of a float copy of the full-resolution masks).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.losses import Target, downsample_target_masks
from sparseinst_cli import Trainer, keep_freed_memory, load_recipe
from sparseinst_cli.data.dense_scene import write_dense_scene
from sparseinst_cli.data.transforms import Collate, TrainTransform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--size", type=int, default=608)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/train_step_profile.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    if args.threads:
        torch.set_num_threads(args.threads)

    side = math.isqrt(args.objects)
    with tempfile.TemporaryDirectory() as tmp:
        annotations = write_dense_scene(Path(tmp), rows=side, cols=side, cell=args.size // side)
        recipe = load_recipe(args.recipe, [
            f"data.train.annotations={annotations}", f"data.train.images={tmp}/images",
            f"train.augmentation.min_sizes=[{args.size}]", f"train.augmentation.max_size={args.size}",
            f"model.decoder.num_instances={max(100, args.objects)}", "train.workers=0", *args.set])
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"val": None})})
        trainer = Trainer.from_recipe(recipe, Path(tmp) / "run")
        transform, collate = TrainTransform(recipe.train.augmentation), Collate(recipe.input)
        phases: dict[str, list[float]] = defaultdict(list)

        def timed(name, work):
            start = time.perf_counter()
            value = work()
            phases[name].append(1000 * (time.perf_counter() - start))
            return value

        for step in range(args.steps + 1):
            samples = [timed("read image and decode masks", lambda: trainer.data.dataset.load(0)) for _ in range(args.batch)]
            augmented = [timed("augment", lambda s=s: transform(s, np.random.default_rng(step))) for s in samples]
            batch = timed("collate", lambda: collate(augmented))
            images = batch.images.contiguous(memory_format=trainer.memory_format)
            with trainer.autocast():
                output = timed("forward", lambda: trainer.model(images))
            size = tuple(output.masks.shape[-2:])
            targets = timed("targets", lambda: [Target(labels, downsample_target_masks(masks, size))
                                                for masks, labels in zip(batch.masks, batch.labels)])
            timed("targets (before: float interpolate)", lambda: [
                F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)
                for masks in batch.masks])
            matches = timed("matching", lambda: trainer.matcher(output, targets))
            losses = timed("losses", lambda: trainer.criterion(output, targets, matches, float(args.objects)))
            timed("backward", lambda: sum(losses.values()).backward())
            timed("optimizer", lambda: (trainer.optimizer.step(), trainer.optimizer.zero_grad()))
        medians = {name: round(statistics.median(times[1:]), 1) for name, times in phases.items()}
    per_image = {k: v for k, v in medians.items() if k in ("read image and decode masks", "augment")}
    step_ms = sum(v for k, v in medians.items() if not k.startswith("targets (before") and k not in per_image)
    step_ms += args.batch * sum(per_image.values())
    before_ms = step_ms - medians["targets"] + medians["targets (before: float interpolate)"]
    report = {
        "recipe": args.recipe, "overrides": args.set, "size": args.size, "objects": args.objects, "batch": args.batch,
        "image_shape": list(batch.images.shape), "threads": torch.get_num_threads(), "freed_memory_kept": kept,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "phase_ms": medians, "step_ms": round(step_ms, 1),
        "images_per_s": round(1000 * args.batch / step_ms, 3),
        "images_per_s_before": round(1000 * args.batch / before_ms, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
