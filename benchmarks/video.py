"""Video throughput against the model's own latency, written as JSON.

    python benchmarks/video.py --threads 2 --out runs/bench/video.json

Writes a 640x480 test video (moving shapes, --frames frames), then for each model (the `demo`
recipe and `r50_giam`, random weights, and any --weights checkpoints, on the fast path) measures
frames per second of
``predict_video`` (decoding, inference, drawing and encoding overlapped) and the same model's
``time`` figure on one 640x480 image (network and post-processing, median). The ratio says how
close the video pipeline comes to the model's own speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from sparseinst_cli import Predictor, keep_freed_memory, time_predictor
from sparseinst_cli.analysis.timing import device_name
from sparseinst_cli.inference.video import predict_video

SIZE = (480, 640)


def write_video(path: Path, frames: int) -> Path:
    height, width = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    for i in range(frames):
        frame = np.full((height, width, 3), 60, np.uint8)
        cv2.circle(frame, (40 + 8 * i % (width - 80), 240), 60, (0, 200, 255), -1)
        cv2.rectangle(frame, (400, 40 + 4 * i % 300), (560, 160 + 4 * i % 300), (255, 80, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="demo,r50_giam", help="comma-separated; empty for none")
    parser.add_argument("--weights", type=Path, action="append", default=[], help="a trained checkpoint (repeatable)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/video.json"))
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the sparseinst command does
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparseinst-video-") as folder:
        clip = write_video(Path(folder) / "clip.mp4", args.frames)
        first = cv2.cvtColor(cv2.VideoCapture(str(clip)).read()[1], cv2.COLOR_BGR2RGB)
        overrides = ["input.min_size_test=480", "input.max_size_test=640"]
        models = [(recipe, lambda r=recipe: Predictor.from_recipe(r, overrides=overrides).optimize())
                  for recipe in filter(None, args.recipes.split(","))]
        models += [(str(w), lambda w=w: Predictor.from_checkpoint(w, overrides=overrides)) for w in args.weights]
        for name, open_model in models:
            predictor = open_model()
            # Fewer runs than sparseinst time's defaults on purpose: a reference beside the video's own rate.
            timing = time_predictor(predictor, first, name=name, size=SIZE, warmup=2, runs=5, per_module=False)
            report = predict_video(predictor, clip, Path(folder) / Path(name).stem)
            rows.append({"model": name, "frames": report.frames, "video_fps": report.frames_per_second,
                         "model_ms": timing.end_to_end.median_ms, "model_fps": timing.fps,
                         "fraction_of_model_speed": round(report.frames_per_second / timing.fps, 3)})
            print(f"{name}: video {report.frames_per_second:.2f} frames/s, model alone {timing.fps:.2f} images/s "
                  f"({timing.end_to_end.median_ms:.0f} ms)")
    result = {"device_name": device_name("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "freed_memory_kept": kept, "video": f"{SIZE[1]}x{SIZE[0]}, {args.frames} frames, mp4v", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
