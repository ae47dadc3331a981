"""OpenVINO against PyTorch and ONNX Runtime on this CPU, in fp32 and int8, for one model at one size.

    python benchmarks/openvino_backends.py --weights runs/demo/model.safetensors --calibration data/demo/train \\
        --threads 2
    python benchmarks/openvino_backends.py --recipe r50_giam --height 640 --width 853 --calibration data/demo/train \\
        --threads 2 --rounds 3

Exports the model to ONNX once (dynamic), converts that to an OpenVINO IR, and quantizes it to
int8 twice on the same --calibration images: ONNX Runtime's static QDQ (``export int8``) and NNCF
(``export openvino --int8``), each with the 7-bit weights this CPU needs or not. Then times five
ways: torch fast fp32, onnxruntime fp32, openvino fp32, onnxruntime int8 and openvino int8, on one
demo scene resized to --height x --width (padded to a multiple of 32): the network alone, and end
to end with the post-processing making every candidate's mask (as ``sparseinst time`` does). The
ways take turns within each round, so that a drift of the machine hits all alike; medians over
rounds x runs. --recipe gives random weights (the same speed; the int8 scales then come from a
random network). Without --calibration the int8 ways are left out. Also records each way's
largest difference from the fast path's raw outputs. Writes runs/bench/openvino_backends.json with the
CPU, the date and the command line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shlex
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from sparseinst_cli import Predictor, keep_freed_memory
from sparseinst_cli.checkpoint import save_checkpoint
from sparseinst_cli.data.demo_data import render_image
from sparseinst_cli.data.images import pad_batch, typical_size
from sparseinst_cli.defaults import TIMING_WARMUP
from sparseinst_cli.deploy.onnx_export import export_onnx
from sparseinst_cli.deploy.openvino_export import export_openvino
from sparseinst_cli.deploy.quantize import quantize_model
from sparseinst_cli.inference.predictor import Batch, cpu_name

OUTPUTS = ("logits", "objectness", "masks")
PACKAGES = ("torch", "onnxruntime", "openvino", "nncf")
REFERENCE = "torch fast fp32"


def checkpoint_for(args: argparse.Namespace, folder: Path) -> Path:
    """--weights, or a seeded random checkpoint of --recipe in ``folder``."""
    if args.weights is not None:
        return args.weights
    model = Predictor.from_recipe(args.recipe, seed=0)
    return save_checkpoint(folder / "random.safetensors", model.model, model.recipe, model.categories)


def time_ways(ways: dict[str, Predictor], batch: Batch, warmup: int, rounds: int,
              runs: int) -> dict[str, dict[str, list[float]]]:
    """Network and end-to-end milliseconds of each way: ``warmup`` untimed runs first, then
    ``runs`` per round after one more untimed run, the ways taking turns within each round."""
    samples = {name: {"network": [], "end_to_end": []} for name in ways}
    for predictor in ways.values():
        for _ in range(warmup):
            predictor.postprocess(predictor.forward(batch), batch, conf=0.0)
    for _ in range(rounds):
        for name, predictor in ways.items():
            predictor.postprocess(predictor.forward(batch), batch, conf=0.0)
            for _ in range(runs):
                start = time.perf_counter()
                output = predictor.forward(batch)
                network = time.perf_counter()
                predictor.postprocess(output, batch, conf=0.0)
                end = time.perf_counter()
                samples[name]["network"].append(1000 * (network - start))
                samples[name]["end_to_end"].append(1000 * (end - start))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--weights", type=Path, help="native checkpoint (.safetensors)")
    model.add_argument("--recipe", help="recipe name or file (random weights)")
    parser.add_argument("--calibration", type=Path, help="folder of images for the int8 ways")
    parser.add_argument("--max-images", type=int, default=16, help="calibration images used at most")
    parser.add_argument("--height", type=int, help="resized image height (default: the recipe's test size, 4:3)")
    parser.add_argument("--width", type=int, help="resized image width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=TIMING_WARMUP, help="untimed runs per way first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per way and round")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/openvino_backends.json"))
    args = parser.parse_args()
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")
    kept = keep_freed_memory()  # as the sparseinst command does
    torch.set_num_threads(args.threads)  # onnxruntime and OpenVINO take torch's thread count
    folder = Path(tempfile.mkdtemp(prefix="openvino-bench-"))
    weights = checkpoint_for(args, folder)
    exports: dict[str, float] = {}

    def timed(name: str, export):
        start = time.perf_counter()
        result = export()
        exports[name] = round(time.perf_counter() - start, 1)
        return result

    float_onnx = timed("onnx", lambda: export_onnx(weights, folder / "float.onnx", dynamic=True))
    float_ir = timed("openvino", lambda: export_openvino(float_onnx, folder / "float.xml")).output
    ways = {REFERENCE: Predictor.from_checkpoint(weights),
            "onnxruntime fp32": Predictor.from_onnx(float_onnx),
            "openvino fp32": Predictor.from_openvino(float_ir)}
    calibration_images = {}
    if args.calibration is not None:
        onnx_int8 = timed("onnxruntime int8", lambda: quantize_model(
            float_onnx, folder / "int8.onnx", args.calibration, max_images=args.max_images))
        ir_int8 = timed("openvino int8", lambda: export_openvino(
            float_ir, folder / "int8.xml", calibration=args.calibration, max_images=args.max_images))
        ways["onnxruntime int8"] = Predictor.from_onnx(onnx_int8.output)
        ways["openvino int8"] = Predictor.from_openvino(ir_int8.output)
        calibration_images = {"onnxruntime int8": len(onnx_int8.calibration),
                              "openvino int8": len(ir_int8.calibration),
                              "reduce_range": onnx_int8.reduce_range}

    reference = ways[REFERENCE]
    spec = reference.recipe.input
    size = (args.height, args.width) if args.height else typical_size(spec.min_size_test, spec.max_size_test)
    image = render_image(0, "val", 1, size).image
    batch = Batch(pad_batch([reference.normalized(image, size)], spec.size_divisibility), [size], [size])
    expected = reference.forward(batch)
    differences = {name: dict(zip(OUTPUTS, (float(f"{float((a - b).abs().max()):.3g}") for a, b in
                                            zip(predictor.forward(batch), expected))))
                   for name, predictor in ways.items() if name != REFERENCE}
    samples = time_ways(ways, batch, args.warmup, args.rounds, args.runs)
    medians = {kind: {name: round(statistics.median(values[kind]), 1) for name, values in samples.items()}
               for kind in ("network", "end_to_end")}
    record = {
        "cpu": cpu_name(),
        "date": date.today().isoformat(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "threads": torch.get_num_threads(),
        "freed_memory_kept": kept,
        "versions": {name: importlib.metadata.version(name) for name in PACKAGES},
        "model": str(args.weights or args.recipe),
        "input": list(size),
        "padded": list(batch.images.shape[-2:]),
        "rounds": args.rounds,
        "runs": args.runs,
        "calibration": calibration_images,
        "export_s": exports,
        "network_ms": medians["network"],
        "end_to_end_ms": medians["end_to_end"],
        "network_vs_torch_fast": {name: round(ms / medians["network"][REFERENCE], 3)
                                  for name, ms in medians["network"].items()},
        "max_abs_difference_from_torch_fast": differences,
    }
    for name in ways:
        print(f"{name:18s} network {medians['network'][name]:8.1f} ms  end to end {medians['end_to_end'][name]:8.1f} ms"
              f"  ({record['network_vs_torch_fast'][name]:.2f}x torch fast)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
