"""``sparseinst curves``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...defaults import CURVES_FILE
from ..console import console


def curves(
    context: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A training run directory (holding metrics.jsonl).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=f"PNG to write \\[default: RUN_DIR/{CURVES_FILE}].")] = None,  # noqa: UP007
) -> None:
    """Draw a run's losses, learning rate and validation AP over steps as a PNG.

    Training draws this at its end; the command draws it for any run, also one still going.

    Examples:
      sparseinst curves runs/demo
      sparseinst curves runs/demo --out demo_curves.png
    """
    from ...engine.curves import save_curves

    path = save_curves(run_dir, out)
    console.print(f"wrote {path}")
