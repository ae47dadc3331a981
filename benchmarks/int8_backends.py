"""Which int8 flow is faster on this CPU: ONNX Runtime's static QDQ (what ``export int8`` ships)
or PyTorch 2 export quantization with the x86 inductor quantizer, compiled by inductor.

    python benchmarks/int8_backends.py --weights r50.safetensors --calibration photos/   # needs torchao

Both are calibrated on the same images of --calibration (pre-processed as prediction does, padded
to the recipe's test size) and time the network alone on that input, next to the fast fp32 path,
in alternated rounds; medians. ONNX Runtime's model keeps the first, depthwise and IAM
convolutions and the linear heads in float (as ``export int8`` does); the PT2E model quantizes
every convolution and linear layer (the quantizer's default), so it does the more int8 work of
the two. Writes runs/bench/int8_backends.json: latencies, the compile time, and each model's
largest difference from fp32 per output.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sparseinst_cli import Predictor, keep_freed_memory
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.images import collect_images, read_image
from sparseinst_cli.deploy.onnx_export import RawOutputs, example_size
from sparseinst_cli.deploy.quantize import quantize_model
from sparseinst_cli.inference.fast_path import optimize_for_inference
from sparseinst_cli.inference.onnx_runtime import OnnxModel

Network = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def pt2e_int8(model: torch.nn.Module, example: torch.Tensor, calibration: list[torch.Tensor]) -> Network:
    """The model quantized by PT2E's x86 inductor quantizer (static, per-channel weights) and compiled."""
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    inductor_config.freezing = True  # constant-fold the quantized weights into oneDNN's packed layout
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(RawOutputs(model), (example,)).module(), quantizer)
    for images in calibration:
        prepared(images)
    return torch.compile(convert_pt2e(prepared))


def run_times(network: Network, images: torch.Tensor, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        network(images)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="native checkpoint (.safetensors)")
    parser.add_argument("--calibration", type=Path, required=True, help="folder of images")
    parser.add_argument("--max-images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/int8_backends.json"))
    args = parser.parse_args()
    if importlib.util.find_spec("torchao") is None:
        parser.error("the PT2E flow needs torchao: pip install torchao")
    kept = keep_freed_memory()  # as the sparseinst command does
    torch.set_num_threads(args.threads)
    plain = Predictor.from_checkpoint(args.weights, fast=False)
    height, width = example_size(plain.recipe)
    paths, _ = collect_images([args.calibration])
    calibration = []
    for path in paths[:args.max_images]:
        images = plain.preprocess([read_image(path)]).images[:, :, :height, :width]
        calibration.append(F.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2])))
    example = calibration[0].contiguous(memory_format=torch.channels_last)

    folded = optimize_for_inference(plain.model, winograd=True)
    fast = RawOutputs(folded)
    folder = Path(tempfile.mkdtemp(prefix="int8-backends-"))
    onnx_int8 = OnnxModel(quantize_model(args.weights, folder / "int8.onnx", args.calibration,
                                         max_images=args.max_images).output)
    start = time.perf_counter()
    with torch.no_grad():
        pt2e = pt2e_int8(optimize_for_inference(plain.model), example, calibration)
        pt2e(example)
    compile_s = time.perf_counter() - start
    networks: dict[str, Network] = {
        "torch fast fp32": fast,
        "onnxruntime int8 (QDQ)": lambda images: tuple(onnx_int8(images))[:3],
        "torch PT2E int8 (x86 inductor)": pt2e,
    }
    times: dict[str, list[float]] = {name: [] for name in networks}
    with torch.inference_mode():
        reference = fast(example)
        differences = {name: [round((a - b).abs().max().item(), 4) for a, b in zip(network(example), reference)]
                       for name, network in networks.items()}
        for _ in range(args.rounds):  # alternated, so that drifts of the machine hit all alike
            for name, network in networks.items():
                network(example)
                times[name] += run_times(network, example, args.runs)
    medians = {name: round(statistics.median(values), 1) for name, values in times.items()}
    record = {"device": device_name("cpu"), "threads": args.threads, "torch": torch.__version__,
              "torchao": importlib.metadata.version("torchao"),
              "onnxruntime": importlib.metadata.version("onnxruntime"), "freed_memory_kept": kept,
              "weights": str(args.weights), "input": [height, width], "calibration_images": len(calibration),
              "pt2e_quantize_and_compile_s": round(compile_s, 1), "network_ms": medians,
              "vs_fast_fp32": {name: round(ms / medians["torch fast fp32"], 3) for name, ms in medians.items()},
              "max_abs_difference_from_fp32": {name: dict(zip(("logits", "objectness", "masks"), values))
                                               for name, values in differences.items()}}
    for name, ms in medians.items():
        print(f"{name:32s} {ms:8.1f} ms  ({record['vs_fast_fp32'][name]:.2f}x fast fp32)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
