"""Freed memory is kept for reuse: a large tensor allocated again costs no page faults (glibc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sparseinst_cli.cli import app as app_module

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

MEASURED_PASSES = 10
BLOCK_PAGES = 13_000  # one 53 MB activation

# Passes of a toy network whose activations are 53-54 MB each (13,000 pages of 4 KiB), made and
# freed as a real network's are; prints the page faults of the last MEASURED_PASSES passes.
REALLOCATION = f"""
import resource, torch, torch.nn.functional as F
from sparseinst_cli.memory import freed_memory_kept, keep_freed_memory
kept = keep_freed_memory()
def network_pass():
    x = torch.ones(1, 96, 320, 432)
    return (F.pad(x, (0, 1, 0, 1)) * 2).relu().sum()
for _ in range(12):  # glibc's heap settles after a few passes (what it holds then, it reuses)
    network_pass()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({MEASURED_PASSES}):
    network_pass()
print(kept, freed_memory_kept(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def reallocation_faults(**environment: str) -> tuple[str, str, int]:
    env = {**os.environ, **environment}
    env.pop("MALLOC_MMAP_MAX_", None), env.pop("MALLOC_TRIM_THRESHOLD_", None)
    output = subprocess.run([sys.executable, "-c", REALLOCATION], env=env, capture_output=True, text=True, check=True)
    kept, reported, faults = output.stdout.split()
    return kept, reported, int(faults)


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    assert reallocation_faults()[:2] == ("True", "True")
    # With one thread glibc now and then still maps one more block late (a heap that settles at
    # an unpredictable pass); mapped afresh, the same passes fault in 4 blocks each (520,000).
    assert reallocation_faults()[2] < 3 * BLOCK_PAGES


@glibc_only
def test_the_system_allocator_faults_every_page_in_again_and_the_opt_out_keeps_it():
    kept, reported, faults = reallocation_faults(SPARSEINST_MALLOC="system")
    assert (kept, reported) == ("False", "False")
    # glibc returns the 4 blocks of each pass to the OS and maps them afresh in the next (520,000)
    assert faults > 3 * MEASURED_PASSES * BLOCK_PAGES


def test_every_command_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(app_module, "keep_freed_memory", lambda: calls.append(True))
    result = CliRunner().invoke(app_module.app, ["recipes"])
    assert result.exit_code == 0 and calls == [True]
