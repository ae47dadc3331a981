"""Masks at image size: the memory-speed kernel against the F.interpolate reference, written as JSON.

    python benchmarks/postprocess.py --threads 2 --out runs/bench/postprocess.json

100 masks from a 640x853 image (decoder output 160x216, padded input 640x864), resized back to
the image (640x853) or to another original size (480x640, 1080x1440), for three kinds of mask
probabilities: "objects" (one soft ellipse per instance covering 0.2-25% of the image, as a
trained model gives), "noise" (smooth random maps with boundaries everywhere: the kernel's worst
case) and "inside" (every value above the threshold, as a randomly initialized model gives).
Rounds alternate reference and kernel; medians. Each result is checked equal to the reference.
The floor is allocating and writing the output masks once (``np.empty`` + fill).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.mask_resize import (
    kernel_agrees_with_torch,
    reference_resize_and_threshold,
    resize_and_threshold,
)
from components.postprocess import MASK_THRESHOLD, masks_to_boxes
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.memory import keep_freed_memory

LOW, INPUT, IMAGE = (160, 216), (640, 864), (640, 853)
ORIGINALS = ((640, 853), (480, 640), (1080, 1440))
TARGET_MS = 15.0  # 100 masks at 640x853, 2 threads


def object_probs(count: int, generator: torch.Generator) -> torch.Tensor:
    h, w = LOW
    ys, xs = torch.arange(h).view(1, h, 1).float(), torch.arange(w).view(1, 1, w).float()
    cy, cx = torch.rand(count, 1, 1, generator=generator) * h, torch.rand(count, 1, 1, generator=generator) * w
    area = torch.exp(torch.empty(count, 1, 1).uniform_(-6.2, -1.4, generator=generator)) * h * w
    aspect = torch.exp(torch.empty(count, 1, 1).uniform_(-0.7, 0.7, generator=generator))
    ry, rx = (area / torch.pi * aspect).sqrt(), (area / torch.pi / aspect).sqrt()
    distance = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2).sqrt()
    return ((1 - distance) * 8 + 0.3 * torch.randn(count, h, w, generator=generator)).sigmoid()


def mask_probs(kind: str, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "objects":
        return object_probs(count, generator)
    if kind == "noise":
        return (F.avg_pool2d(torch.randn(1, count, *LOW, generator=generator) * 4, 9, 1, 4)[0] * 6).sigmoid()
    return 0.9 + 0.05 * torch.rand(count, *LOW, generator=generator)


def median_ms(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/postprocess.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    torch.set_num_threads(args.threads)
    if not kernel_agrees_with_torch():
        raise SystemExit("the mask kernel does not reproduce F.interpolate on this machine; nothing to compare")

    rows = []
    for kind in ("objects", "noise", "inside"):
        probs = mask_probs(kind, args.count)
        for original in ORIGINALS:
            sizes = (INPUT, IMAGE, original, MASK_THRESHOLD)
            expected = reference_resize_and_threshold(probs, *sizes)
            masks, boxes = resize_and_threshold(probs, *sizes)
            assert torch.equal(masks, expected) and torch.equal(boxes, masks_to_boxes(expected))
            reference, kernel, floor = [], [], []
            for _ in range(args.rounds):  # alternated, so that drifts of the machine hit both alike
                reference.append(median_ms(lambda: masks_to_boxes(reference_resize_and_threshold(probs, *sizes)), 1))
                kernel.append(median_ms(lambda: resize_and_threshold(probs, *sizes), 1))
                floor.append(median_ms(lambda: np.empty((args.count, *original), np.bool_).fill(False), 1))
            row = {"masks": kind, "original": list(original), "foreground": round(expected.float().mean().item(), 4),
                   "reference_ms": round(statistics.median(reference), 2),
                   "kernel_ms": round(statistics.median(kernel), 2), "floor_ms": round(statistics.median(floor), 2)}
            row["speedup"] = round(row["reference_ms"] / row["kernel_ms"], 2)
            rows.append(row)
            print(f"{kind:8s} -> {original[0]}x{original[1]}: reference {row['reference_ms']:7.1f} ms, "
                  f"kernel {row['kernel_ms']:6.1f} ms ({row['speedup']}x), writing the masks {row['floor_ms']:5.1f} ms")

    headline = next(r for r in rows if r["masks"] == "objects" and tuple(r["original"]) == IMAGE)
    result = {"device_name": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "freed_memory_kept": kept, "count": args.count, "rounds": args.rounds, "rows": rows,
              "target_ms": TARGET_MS, "target_met": headline["kernel_ms"] <= TARGET_MS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"100 object masks at 640x853: {headline['kernel_ms']} ms (target {TARGET_MS} ms); {args.out}")


if __name__ == "__main__":
    main()
