"""How long the command line takes to answer ``--help``, ``--version``, a command's help and a
usage error, against the goal of 0.5 s, written as JSON.

    python benchmarks/cli_startup.py --runs 7 --out runs/bench/cli_startup.json

"after" runs ``python -m sparseinst_cli ARGS`` as it is. "before" runs the same command after
importing what the command line loaded before it answered when every command module imported
its library modules at the top (torch, torchvision, onnx, numba, OpenCV with them): the same
process otherwise, so the difference is what the lazy imports save. Medians of ``--runs``
alternated runs of each; the CPU is named beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from sparseinst_cli.inference.predictor import cpu_name

GOAL_SECONDS = 0.5
COMMANDS = (["--help"], ["--version"], ["predict", "--help"], ["predict", "--bogus"])
# What the command modules imported at their top before they loaded their work lazily.
EAGER_MODULES = (
    "components.registry", "sparseinst_cli.deploy.backends", "sparseinst_cli.inference.batches",
    "sparseinst_cli.inference.video", "sparseinst_cli.analysis.coco_eval", "sparseinst_cli.analysis.timing",
    "sparseinst_cli.analysis.tide", "sparseinst_cli.analysis.tide_plot", "sparseinst_cli.analysis.activation_maps",
    "sparseinst_cli.analysis.mask_ceiling", "sparseinst_cli.analysis.dataset_figure", "sparseinst_cli.data.check",
    "sparseinst_cli.data.convert", "sparseinst_cli.data.split", "sparseinst_cli.data.demo_data",
    "sparseinst_cli.deploy.onnx_export", "sparseinst_cli.deploy.quantize", "sparseinst_cli.engine.training",
    "sparseinst_cli.engine.curves", "sparseinst_cli.weights.conversion",
)
EAGER_PRELUDE = ("import importlib, sys\n"
                 f"for name in {EAGER_MODULES!r}:\n    importlib.import_module(name)\n"
                 "importlib.import_module('components.registry').load_builtins()\n"
                 "from sparseinst_cli.cli import main\n")


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/cli_startup.json"))
    args = parser.parse_args()
    rows = {}
    for arguments in COMMANDS:
        after = [sys.executable, "-m", "sparseinst_cli", *arguments]
        before = [sys.executable, "-c", EAGER_PRELUDE + f"sys.argv = ['sparseinst', *{arguments!r}]\nmain()\n"]
        samples: dict[str, list[float]] = {"before": [], "after": []}
        seconds(after)  # the first run fills the file cache for both
        for _ in range(args.runs):
            samples["before"].append(seconds(before))
            samples["after"].append(seconds(after))
        rows[" ".join(arguments)] = {key: round(statistics.median(values), 3) for key, values in samples.items()}
        print(f"sparseinst {' '.join(arguments)}: before {rows[' '.join(arguments)]['before']:.2f} s, "
              f"after {rows[' '.join(arguments)]['after']:.2f} s")
    result = {
        "cpu": cpu_name(),
        "date": date.today().isoformat(),
        "python": sys.version.split()[0],
        "runs": args.runs,
        "goal_seconds": GOAL_SECONDS,
        "commands": rows,
        "goal_met": all(row["after"] < GOAL_SECONDS for row in rows.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "commands"}, indent=2))


if __name__ == "__main__":
    main()
