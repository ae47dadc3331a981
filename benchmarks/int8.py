"""bf16 and int8 against fp32 on a trained model: mask AP on a dataset and latency, in one run.

    python benchmarks/int8.py --weights runs/demo/model.safetensors --data data/demo/val.json \\
        --images data/demo/val --calibration data/demo/train --threads 2

Times the plain model (the reference), the PyTorch fast path in fp32 and in bf16, the float ONNX
model and the int8 one on onnxruntime (each in turn on the same image at the recipe's test size,
medians of --runs, network and post-processing), and scores each on the dataset: AP and latency
relative to the plain model. Writes runs/bench/int8.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sparseinst_cli import (
    CocoInstances,
    Predictor,
    evaluate_model,
    export_onnx,
    time_predictor,
)
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.images import read_image, typical_size
from sparseinst_cli.defaults import TIMING_RUNS
from sparseinst_cli.deploy.quantize import quantize_model
from sparseinst_cli.memory import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=TIMING_RUNS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/int8.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="int8-bench-"))
    float_onnx = export_onnx(args.weights, folder / "float.onnx", dynamic=True)
    quantize_model(float_onnx, folder / "int8.onnx", args.calibration)
    models = {"torch plain fp32": Predictor.from_checkpoint(args.weights, fast=False),
              "torch fast fp32": Predictor.from_checkpoint(args.weights),
              "torch fast bf16": Predictor.from_checkpoint(args.weights).optimize("bf16"),
              "onnxruntime fp32": Predictor.from_onnx(float_onnx),
              "onnxruntime int8": Predictor.from_onnx(folder / "int8.onnx")}
    dataset = CocoInstances(args.data, args.images)
    image = read_image(next(iter(sorted(args.images.glob("*.png")) or sorted(args.images.glob("*.jpg")))))
    record = {"device": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "freed_memory_kept": kept, "weights": str(args.weights), "models": {}}
    for name, predictor in models.items():
        spec = predictor.recipe.input
        size = typical_size(spec.min_size_test, spec.max_size_test)
        timing = time_predictor(predictor, image, name=name, size=size, runs=args.runs, per_module=False)
        metrics = evaluate_model(predictor, dataset).metrics
        record["models"][name] = {"median_ms": timing.end_to_end.median_ms, "input": list(size),
                                  **{k: metrics[k] for k in ("AP", "AP50", "AP75")}}
        reference = record["models"]["torch plain fp32"]
        record["models"][name].update(latency_vs_plain=timing.end_to_end.median_ms / reference["median_ms"],
                                      AP_vs_plain=metrics["AP"] - reference["AP"])
        print(name, record["models"][name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
