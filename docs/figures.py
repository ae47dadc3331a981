"""Draw the documentation's pictures from a real run, so that they show what the code gives.

    python docs/figures.py --run runs/demo --images data/demo/val

After the quick start (`sparseinst demo-data data/demo && sparseinst train demo --out
runs/demo`) it writes, under docs/assets/:

- overlay.png: the trained demo model's predictions on three validation images, side by side;
- iam.jpg: what its instance activation maps look at in one image (sparseinst viz-iam);
- curves.png: the run's losses, learning rate and validation AP (sparseinst curves).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sparseinst_cli import Predictor
from sparseinst_cli.analysis.activation_maps import explain_image
from sparseinst_cli.data.images import read_image, write_image
from sparseinst_cli.engine.curves import save_curves

ASSETS = Path(__file__).resolve().parent / "assets"
OVERLAY_IMAGES = ("000014.png", "000068.png", "000013.png")  # all right here; AP50 58 says not always
IAM_IMAGE = "000068.png"
GAP = 8  # white pixels between the overlays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--images", type=Path, default=Path("data/demo/val"))
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_checkpoint(args.run / "model.safetensors")
    overlays = [predictor(read_image(args.images / name))[0].plot() for name in OVERLAY_IMAGES]
    height = max(o.shape[0] for o in overlays)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    row = [piece for overlay in overlays for piece in (overlay, gap)][:-1]
    write_image(args.out / "overlay.png", np.concatenate(row, axis=1))
    explain_image(predictor, args.images / IAM_IMAGE, args.out / "iam.jpg", top_k=3)  # a photo-like grid: JPEG
    save_curves(args.run, args.out / "curves.png")
    print(f"wrote overlay.png, iam.jpg and curves.png to {args.out}")


if __name__ == "__main__":
    main()
