"""The light recipe against YOLOv8s-seg on the CPU, in one run, end to end from an image array.

    python benchmarks/yolo_peer.py --threads 2                      # needs 'pip install ultralytics'
    python benchmarks/yolo_peer.py --recipe demo --set model.decoder.num_instances=100 \
        --set input.min_size_test=640 --set input.max_size_test=853 --variants fast,bf16,demo.int8.onnx

Both sides take the same 640x853 RGB photo-like scene (BGR for Ultralytics) and return instances
with masks: Ultralytics' predictor (letterbox to a 640x864 network input, network, NMS, masks; the
model built from ``yolov8s-seg.yaml`` without weights, which is the same arithmetic as a trained
one) and ``Predictor.predict`` (resize, network, post-processing, masks at the image's size).
Untrained models make an unequal amount of mask work (YOLO's prior keeps no box, ours keep all 100
candidates), so two equal workloads are timed:

- ``no masks``: YOLO at its default thresholds (no detection survives), ours with ``conf``
  above any score (no mask is made): network, decoding and NMS or ranking only;
- ``100 candidates``: YOLO at ``conf=0, max_det=100`` (NMS over every box, then masks for the
  survivors), ours keeping all 100 with their masks.

Ultralytics sets torch's thread count to ``cpu_count - 1`` when its predictor starts (1 on a
2-core machine); both sides run on ``--threads`` here. Each SparseInst variant is timed in turn
with the peer, in alternated rounds; medians. Writes runs/bench/yolo_peer.json with each
variant's latency and its ratio to the peer's, per workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import torch

from sparseinst_cli import Predictor, keep_freed_memory
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.data.demo_data import render_image

PEER_INPUT = (640, 864)  # Ultralytics' letterbox of a 640x853 image: stride-32 padding of the width
TARGET_RATIO = 0.4
WORKLOADS = {  # name: (the peer's predict options, our conf)
    "no masks": ({}, 1.0),
    "100 candidates": ({"conf": 0.0, "max_det": 100}, 0.0),
}


def _median_ms(call, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="lite_giam", help="timed at its test size, which should be 640/853")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--variants", default="fast,bf16", help="comma-separated: fast, bf16 (autocast), plain, or an .onnx file (onnxruntime)")
    parser.add_argument("--peer", default="yolov8s-seg.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/yolo_peer.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    try:
        from ultralytics import YOLO
        from ultralytics.utils import torch_utils
    except ImportError:
        raise SystemExit("this benchmark needs the peer: pip install ultralytics") from None
    torch_utils.NUM_THREADS = args.threads  # what its select_device sets torch's thread count to
    torch.set_num_threads(args.threads)

    image = cv2.resize(render_image(0, "val", 1, (480, 640)).image, (853, 640))  # RGB uint8, 640x853
    peer = YOLO(args.peer)
    ours = {}
    for variant in args.variants.split(","):
        if variant.endswith(".onnx"):  # an exported model (an int8 one, say) on onnxruntime
            ours[Path(variant).name] = Predictor.from_onnx(variant)
            continue
        predictor = Predictor.from_recipe(args.recipe, "cpu", tuple(args.overrides), seed=0)
        if variant == "plain":
            predictor.plain()
        else:
            predictor.optimize("fp32" if variant == "fast" else variant)
        ours[variant] = predictor

    record = {"device": device_name("cpu"), "threads": args.threads, "torch": torch.__version__,
              "freed_memory_kept": kept, "image": [640, 853],
              "peer": {"model": args.peer, "network_input": list(PEER_INPUT)},
              "recipe": args.recipe, "overrides": args.overrides, "target_ratio": TARGET_RATIO, "workloads": {}}
    for workload, (peer_options, conf) in WORKLOADS.items():
        def run_peer(options=peer_options) -> int:
            return len(peer.predict(image[:, :, ::-1].copy(), imgsz=PEER_INPUT, device="cpu", verbose=False,
                                    **options)[0].boxes)

        counts = {"peer": run_peer(), **{name: len(p.predict([image], conf=conf)[0]) for name, p in ours.items()}}
        for _ in range(2):  # warm-up, the mask kernel's compilation included
            run_peer()
            for predictor in ours.values():
                predictor.predict([image], conf=conf)
        if torch.get_num_threads() != args.threads:
            raise SystemExit(f"torch runs {torch.get_num_threads()} threads, not {args.threads}")
        samples: dict[str, list[float]] = {name: [] for name in counts}
        for round_index in range(args.rounds):
            samples["peer"].append(_median_ms(run_peer, args.runs))
            for name, predictor in ours.items():
                samples[name].append(_median_ms(lambda p=predictor: p.predict([image], conf=conf), args.runs))
            print(f"{workload}, round {round_index + 1}: "
                  + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in samples.items()), flush=True)
        peer_ms = statistics.median(samples["peer"])
        result = {"peer": {"median_ms": peer_ms, "instances": counts["peer"], "options": peer_options,
                           "rounds_ms": samples["peer"]}}
        for name in ours:
            ms = statistics.median(samples[name])
            result[name] = {"median_ms": ms, "ratio_to_peer": ms / peer_ms, "instances": counts[name],
                            "rounds_ms": samples[name]}
            print(f"{workload}: {args.recipe} {name} {ms:.0f} ms ({counts[name]} masks) = {ms / peer_ms:.2f}x "
                  f"{args.peer} {peer_ms:.0f} ms ({counts['peer']} masks); target <= {TARGET_RATIO}x")
        record["workloads"][workload] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
