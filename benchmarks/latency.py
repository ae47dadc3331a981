"""Median inference latency of a recipe's model (random weights), written as JSON.

    python benchmarks/latency.py --recipe r50_giam --height 640 --width 853 --out runs/bench/latency.json

Times the network forward alone and forward + post-processing, batch 1, after warm-up,
synchronizing the device around each run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sparseinst_cli.inference import Batch, Predictor


def measure(run, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="r50_giam")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/latency.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    predictor = Predictor.from_recipe(args.recipe, device=args.device)
    image = torch.randint(0, 256, (args.height, args.width, 3), dtype=torch.uint8).numpy()
    batch: Batch = predictor.preprocess([image])
    forward = measure(lambda: predictor.forward(batch), predictor.device, args.warmup, args.runs)
    end_to_end = measure(lambda: predictor([image]), predictor.device, args.warmup, args.runs)

    result = {
        "recipe": args.recipe,
        "input": [args.height, args.width],
        "padded_input": list(batch.images.shape[-2:]),
        "batch": 1,
        "device": str(predictor.device),
        "device_name": torch.cuda.get_device_name(predictor.device) if predictor.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "runs": args.runs,
        "forward_median_ms": 1000 * statistics.median(forward),
        "end_to_end_median_ms": 1000 * statistics.median(end_to_end),
        "end_to_end_fps": 1 / statistics.median(end_to_end),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
