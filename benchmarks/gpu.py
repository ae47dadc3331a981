"""r50_giam on one GPU: batch-1 fp16 latency end to end (post-processing on the GPU too) and
batch-32 throughput, plain, fast, and compiled with CUDA graphs, in one short run.

    python benchmarks/gpu.py --out runs/bench/gpu.json    # a few minutes on one GPU

Random weights (seeded; every candidate passes the score threshold, the worst case for
post-processing), the built-in scene at 640x853. Each variant in turn, at each batch size:
``plain fp32`` (the model as loaded: the reference), ``fast fp16`` (folded batch norm, NHWC,
fp16 autocast), ``fast fp16 compiled`` (``torch.compile`` in its "reduce-overhead" mode, which
replays the network as CUDA graphs: one launch instead of hundreds of small kernels). A variant
that fails records its error and the others still run. Writes the medians, FPS (images per
second), per-module times where hooks allow, and whether batch 1 fast fp16 reaches TARGET_FPS.
``--device cpu`` with a small ``--height/--width`` checks the script itself on any machine.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from sparseinst_cli import Predictor, time_predictor
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.demo_data import render_image

TARGET_FPS = 400.0  # r50_giam, 640, batch 1, fp16, end to end, H100/H200-class card


def variants(predictor: Predictor) -> dict[str, Callable[[], object]]:
    """Name -> a function that sets ``predictor`` up for that variant (each starts from the plain model)."""

    def compiled() -> None:
        predictor.optimize("fp16")
        predictor.model = torch.compile(predictor.model, mode="reduce-overhead", dynamic=False)

    return {"plain fp32": predictor.plain,
            "fast fp16": lambda: predictor.optimize("fp16"),
            "fast fp16 compiled": compiled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="r50_giam")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    parser.add_argument("--device", default="cuda")
    # More than sparseinst time's defaults on purpose: GPU runs are short, and CUDA graphs and
    # cuDNN's autotuning settle over the first runs.
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/gpu.json"))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here (use --device cpu to check the script)")
    torch.manual_seed(0)
    predictor = Predictor.from_recipe(args.recipe, device=args.device)
    image = render_image(0, "val", 1, (args.height, args.width)).image
    size = (args.height, args.width)
    record: dict = {"recipe": args.recipe, "device": device_name(predictor.device), "torch": torch.__version__,
                    "input": list(size), "target_fps": TARGET_FPS, "results": {}}
    for batch in (int(b) for b in args.batches.split(",")):
        runs = max(3, args.runs if batch == 1 else args.runs // 5)
        for name, set_up in variants(predictor).items():
            key = f"{name}, batch {batch}"
            started = time.perf_counter()
            try:
                set_up()
                timing = time_predictor(predictor, image, name=key, size=size, batch=batch, warmup=args.warmup,
                                        runs=runs, per_module="compiled" not in name)
            except Exception as exc:  # one failing variant must not lose the others' figures
                record["results"][key] = {"error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc(limit=5)}
                print(f"{key}: failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            median_s = timing.end_to_end.median_ms / 1e3
            record["results"][key] = {**timing.to_json(), "images_per_s": round(batch / median_s, 1),
                                      "setup_and_timing_s": round(time.perf_counter() - started, 1)}
            print(f"{key}: {timing.end_to_end.median_ms:.2f} ms per batch, {batch / median_s:.1f} images/s", flush=True)
    best = record["results"].get("fast fp16 compiled, batch 1") or {}
    eager = record["results"].get("fast fp16, batch 1") or {}
    fps = max(best.get("images_per_s", 0.0), eager.get("images_per_s", 0.0))
    record["batch1_fp16_fps"] = fps
    record["target_met"] = fps >= TARGET_FPS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"batch 1 fp16: {fps:.1f} FPS (target {TARGET_FPS:.0f}); wrote {args.out}")


if __name__ == "__main__":
    main()
