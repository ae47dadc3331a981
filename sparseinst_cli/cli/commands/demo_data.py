"""``sparseinst demo-data``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...defaults import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES
from ..console import console
from ..progress import ProgressBar


def demo_data(
    context: typer.Context,
    out: Annotated[Path, typer.Argument(help="Folder to write train.json, val.json, train/ and val/ into.")] = Path(
        "data/demo"),
    train_images: Annotated[int, typer.Option(min=1, help="Training images.")] = DEMO_TRAIN_IMAGES,
    val_images: Annotated[int, typer.Option(min=1, help="Validation images.")] = DEMO_VAL_IMAGES,
    seed: Annotated[int, typer.Option(help="Same seed, same dataset (byte for byte).")] = 0,
) -> None:
    """Write the built-in synthetic dataset: shapes of 4 classes on textured backgrounds, COCO format.

    Examples:
      sparseinst demo-data data/demo && sparseinst train demo --out runs/demo
    """
    from ...data.demo_data import generate_demo_dataset

    with ProgressBar() as progress:
        dataset = generate_demo_dataset(out, train_images=train_images, val_images=val_images, seed=seed,
                                        progress=progress)
    console.print(f"wrote {dataset.train_images} training images ({dataset.train_instances} instances) and "
                  f"{dataset.val_images} validation images ({dataset.val_instances} instances) to {out}; "
                  f"classes: {', '.join(dataset.class_names)}")
