"""End-to-end inference latency of a recipe, plain and fast (folded BN, NHWC), written as JSON.

    python benchmarks/latency.py --recipe r50_giam --height 640 --width 853 --threads 2 --out runs/bench/latency.json
    python benchmarks/latency.py --device cuda --dtype fp16 --batch 32 --out runs/bench/latency_gpu.json

Random weights (seeded), so every one of the N candidates passes the score threshold: the worst
case for post-processing. Times network + post-processing per batch with ``sparseinst_cli.analysis.timing``
(warm-up, device synchronization, median), per module as well, for the plain model and the
optimized one, and reports the speed-up. The reference figure of the issue (the authors' code,
r50_giam, 640x853, 2 CPU threads) is 1570 ms; the target is at most 0.7 of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparseinst_cli import Precision, Predictor, keep_freed_memory, time_predictor
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.demo_data import render_image
from sparseinst_cli.defaults import TIMING_RUNS, TIMING_WARMUP

AUTHORS_CPU_MS = 1570.0  # the authors' implementation, r50_giam 640x853, batch 1, fp32, 2 CPU threads
TARGET_FRACTION = 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="r50_giam")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="fp32", choices=[p.value for p in Precision])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the fast model")
    parser.add_argument("--warmup", type=int, default=TIMING_WARMUP)
    parser.add_argument("--runs", type=int, default=TIMING_RUNS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/latency.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    if args.threads:
        torch.set_num_threads(args.threads)

    predictor = Predictor.from_recipe(args.recipe, device=args.device)
    image = render_image(0, "val", 1, (args.height, args.width)).image
    size = (args.height, args.width)
    options = {"size": size, "batch": args.batch, "warmup": args.warmup, "runs": args.runs}
    plain = time_predictor(predictor.plain().use_precision(args.dtype), image, name=f"{args.recipe} plain", **options)
    optimized = predictor.optimize(args.dtype, compile=args.compile)  # a copy of the model; plain is timed
    fast = time_predictor(optimized, image, name=f"{args.recipe} fast", per_module=not args.compile, **options)

    result = {
        "recipe": args.recipe,
        "device": str(predictor.device),
        "device_name": device_name(predictor.device),
        "threads": torch.get_num_threads(),
        "freed_memory_kept": kept,
        "torch": torch.__version__,
        "plain": plain.to_json(),
        "fast": fast.to_json(),
        "speedup": round(plain.end_to_end.median_ms / fast.end_to_end.median_ms, 3),
    }
    if predictor.device.type == "cpu" and size == (640, 853) and args.batch == 1 and args.dtype == "fp32":
        result["authors_reference_ms"] = AUTHORS_CPU_MS
        result["fraction_of_authors"] = round(fast.end_to_end.median_ms / AUTHORS_CPU_MS, 3)
        result["target_met"] = result["fraction_of_authors"] <= TARGET_FRACTION
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("plain", "fast")}, indent=2))
    for timing in (plain, fast):
        stages = ", ".join(f"{k} {v.median_ms:.0f}" for k, v in timing.modules.items())
        print(f"{timing.name}: {timing.end_to_end.median_ms:.0f} ms end to end ({stages})")


if __name__ == "__main__":
    main()
