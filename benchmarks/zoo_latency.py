"""CPU latency of every model of the zoo that this project builds, at its published input size,
written as JSON: the figures of the README's model table.

    python benchmarks/zoo_latency.py --threads 2 --runs 5 --out runs/bench/zoo_latency.json

Each model's architecture runs with random weights (the same arithmetic as the trained model) on
the default fast path in fp32 and in bf16, end to end: a 4:3 scene resized to the input size,
the network, and post-processing with every candidate's mask made (the most it costs). Medians
of ``--runs`` after one warm-up run; the CPU is named in the JSON.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import torch

from sparseinst_cli import ModelSource, Precision, keep_freed_memory, time_models
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.weights.zoo import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None, help="zoo names (default: every one built here)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/zoo_latency.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    rows = []
    for model in MODELS:
        if not model.available or (args.models and model.name not in args.models):
            continue
        sources = [ModelSource(recipe=model.recipe, overrides=(f"input.min_size_test={model.input_size}",),
                               dtype=dtype) for dtype in (Precision.fp32, Precision.bf16)]
        report = time_models(sources, None, warmup=1, runs=args.runs, per_module=False, threads=args.threads)
        fp32, bf16 = report.timings
        rows.append({"name": model.name, "recipe": model.recipe, "input": list(fp32.input_size),
                     "ap_val": model.ap_val, "fp32_ms": fp32.end_to_end.median_ms,
                     "bf16_ms": bf16.end_to_end.median_ms, "gflops": fp32.gflops})
        print(f"{model.name}: {fp32.input_size[0]}x{fp32.input_size[1]}, fp32 {fp32.end_to_end.median_ms:.0f} ms, "
              f"bf16 {bf16.end_to_end.median_ms:.0f} ms, {fp32.gflops} GFLOPs", flush=True)
    result = {"cpu": device_name("cpu"), "date": date.today().isoformat(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "freed_memory_kept": kept, "runs": args.runs, "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
