"""Training throughput (images/s) of a recipe on the built-in demo data, written as JSON.

    python benchmarks/train_throughput.py --recipe demo --out runs/bench/train_demo.json
    python benchmarks/train_throughput.py --recipe r50_giam --size 640 --batch 2 --out runs/bench/train_r50.json

Generates a small demo set at the requested image size, trains ``--warmup`` steps, then times
``--steps`` steps (data loading included) and reports the median step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sparseinst_cli import (
    Trainer,
    generate_demo_dataset,
    keep_freed_memory,
    load_recipe,
)
from sparseinst_cli.engine.distributed import Process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--size", type=int, default=0, help="image size (0: the recipe's own training sizes)")
    parser.add_argument("--batch", type=int, default=0, help="images per step (0: the recipe's batch_size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "auto"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/train_throughput.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does

    with tempfile.TemporaryDirectory() as tmp:
        size = args.size or 256
        generate_demo_dataset(Path(tmp), train_images=32, val_images=1, size=(size, size))
        overrides = [f"data.train.annotations={tmp}/train.json", f"data.train.images={tmp}/train",
                     f"train.precision={args.precision}",
                     f"train.solver.max_iter={args.warmup + args.steps}", "train.checkpoint_period=1000000"]
        if args.size:
            overrides += [f"train.augmentation.min_sizes=[{args.size}]", f"train.augmentation.max_size={args.size}"]
        if args.batch:
            overrides.append(f"train.solver.batch_size={args.batch}")
        recipe = load_recipe(args.recipe, overrides)
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"val": None})})
        trainer = Trainer.from_recipe(recipe, Path(tmp) / "run", Process(device=torch.device(args.device)))
        solver = trainer.recipe.train.solver
        times = []
        with trainer.data.batches(trainer.step, trainer.process) as batches:
            for step in range(args.warmup + args.steps):
                start = time.perf_counter()
                trainer.train_step([next(batches) for _ in range(solver.accumulate)])
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= args.warmup:
                    times.append(time.perf_counter() - start)

    median = statistics.median(times)
    result = {
        "recipe": args.recipe,
        "image_size": size,
        "batch_size": solver.batch_size,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "freed_memory_kept": kept,
        "precision": trainer.recipe.train.precision,  # auto resolved
        "steps": args.steps,
        "median_step_s": round(median, 4),
        "images_per_s": round(solver.batch_size / median, 3),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
