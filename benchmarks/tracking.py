"""What tracking adds per frame: ``Tracker.update`` on moving instances, written as JSON.

    python benchmarks/tracking.py --threads 2 --out runs/bench/tracking.json

For each frame size (1280x720, 1920x1080) and instance count (5, 20, 50), ellipses of 0.05-3%
of the frame move at their own speed across ``--frames`` frames, scored 0.2-0.95 (so both
association rounds run); some leave and new ones enter. The update's time per frame (median and
95th percentile) covers everything tracking does: sampling the masks on the grid, the motion
prediction, both Hungarian rounds and the new tracks; the model and the drawing are not in it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from components import Instances
from components.postprocess import masks_to_boxes
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.inference.results import Prediction
from sparseinst_cli.inference.tracking import Tracker

SIZES = ((720, 1280), (1080, 1920))
COUNTS = (5, 20, 50)
TARGET_MS = 5.0  # "a few ms per frame"


def moving_ellipses(size: tuple[int, int], count: int, frames: int, seed: int = 0) -> list[Prediction]:
    """``frames`` predictions of ``count`` ellipses moving in straight lines (wrapping around)."""
    height, width = size
    rng = np.random.default_rng(seed)
    centers = rng.uniform((0, 0), (width, height), (count, 2))
    velocity = rng.uniform(-8, 8, (count, 2))
    radii = np.sqrt(rng.uniform(0.0005, 0.03, count) * height * width / np.pi)[:, None] * rng.uniform(0.7, 1.4, (count, 2))
    scores = torch.tensor(rng.uniform(0.2, 0.95, count), dtype=torch.float32)
    ys, xs = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    categories = [{"id": 1, "name": "object"}]
    predictions = []
    for t in range(frames):
        at = (centers + velocity * t) % (width, height)
        cx, cy = (torch.tensor(at[:, i], dtype=torch.float32).view(-1, 1, 1) for i in (0, 1))
        rx, ry = (torch.tensor(radii[:, i], dtype=torch.float32).view(-1, 1, 1) for i in (0, 1))
        masks = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        order = torch.argsort(scores, descending=True)
        instances = Instances(masks[order], scores[order], torch.zeros(count, dtype=torch.int64),
                              masks_to_boxes(masks[order]).float(), size)
        predictions.append(Prediction.of(instances, categories))
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tracking.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in SIZES:
        for count in COUNTS:
            predictions = moving_ellipses(size, count, args.frames)
            tracker = Tracker(conf=0.5)
            times = []
            for prediction in predictions:
                start = time.perf_counter()
                tracker.update(prediction)
                times.append((time.perf_counter() - start) * 1000)
            times = sorted(times[1:])  # the first frame only starts tracks
            row = {"size": f"{size[1]}x{size[0]}", "instances": count,
                   "median_ms": round(statistics.median(times), 3),
                   "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3), "tracks": len(tracker.tracks)}
            rows.append(row)
            print(f"{row['size']:>10} {count:3d} instances: median {row['median_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms")
    result = {"device_name": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
              "frames": args.frames, "target_ms": TARGET_MS, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
