"""Latency per module (the paper's Table 8): backbone, encoder, decoder, post-processing, end to end.

Timing attaches from outside: forward hooks on the model's ``backbone``, ``encoder`` and
``decoder`` record a clock (``perf_counter`` on CPU; CUDA events on GPU, read after one
synchronization per run), and post-processing is timed around its call. The model knows
nothing of it. Each run is synchronized before and after, so the module times add up to the
end-to-end time up to the hooks' own overhead and the small work between modules.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..data.demo_data import render_image
from ..data.images import pad_batch, read_image, typical_size
from ..defaults import TIMING_RUNS, TIMING_WARMUP, Backend
from ..deploy.backends import ModelSource
from ..errors import Notice, SparseInstError
from ..files import write_json
from ..inference.predictor import Batch, Predictor, cpu_name
from ..memory import freed_memory_kept
from ..progress import SILENT, Progress

MODULES = ("backbone", "encoder", "decoder")
STAGES = (*MODULES, "postprocess")
POSTPROCESS_PARTS = ("scores", "masks")  # post-processing split: scoring, then masks at image size and boxes
UNATTRIBUTED = "other"  # end-to-end time outside the timed stages (glue between modules, hooks)
TIMING_IMAGE_SIZE = (480, 640)  # the default timing image (a demo-data scene), resized to each size
MIN_SIZE = 32
MAX_SPREAD = 2.0  # slowest run over fastest beyond which a timing is flagged


@dataclass
class Stat:
    median_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Stat:
        ms = [1000 * s for s in seconds]
        return cls(round(statistics.median(ms), 3), round(min(ms), 3), round(max(ms), 3))


@dataclass
class Timing:
    """One configuration's latency; ``modules`` keyed by ``STAGES``, ``POSTPROCESS_PARTS`` (the
    post-processing's split) and ``UNATTRIBUTED`` (the network's modules only with per-module timing)."""

    name: str
    input_size: tuple[int, int]  # resized image (h, w)
    padded_size: tuple[int, int]
    batch: int
    dtype: str
    device: str
    runs: int
    end_to_end: Stat
    fps: float  # images per second at the median end-to-end time
    modules: dict[str, Stat] = field(default_factory=dict)
    parameters: int = 0
    gflops: float = 0.0  # per image, network forward only
    detections: float = 0.0  # mean instances kept per image (post-processing work depends on it)

    @property
    def spread(self) -> float:
        """The slowest end-to-end run over the fastest."""
        return self.end_to_end.max_ms / self.end_to_end.min_ms if self.end_to_end.min_ms > 0 else 1.0

    def to_json(self) -> dict:
        return asdict(self) | {"spread": round(self.spread, 2)}


class Clock:
    """Timestamps on the device's own timeline."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


@contextmanager
def module_clock(model: nn.Module, clock: Clock, marks: dict[str, list]) -> Iterator[None]:
    """Record ``marks[name] = [start, end]`` around each of ``MODULES``' forward calls."""
    handles = []
    for name in MODULES:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: marks.__setitem__(n, [clock.now()])))
        handles.append(module.register_forward_hook(lambda *_, n=name: marks[n].append(clock.now())))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def device_name(device: str | torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's with its vector extensions (``cpu_name``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def count_gflops(model: nn.Module, images: torch.Tensor) -> float:
    """Forward GFLOPs per image (multiply-add counted as 2), from torch's flop counter."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(images[:1])
    return round(counter.get_total_flops() / 1e9, 2)


def time_predictor(predictor: Predictor, image: np.ndarray, *, name: str, size: tuple[int, int], batch: int = 1,
                   warmup: int = TIMING_WARMUP, runs: int = TIMING_RUNS, per_module: bool = True) -> Timing:
    """Latency of ``predictor.forward`` (its model, precision and memory format) plus
    post-processing on ``batch`` copies of ``image`` resized to ``size`` (h, w), after ``warmup``
    runs; medians over ``runs``. Post-processing makes every candidate's mask (``conf`` 0), the
    most it can cost.

    With ``per_module`` the hooks time each module; end-to-end times come from the same runs.
    """
    images = pad_batch([predictor.normalized(image, size)] * batch, predictor.recipe.input.size_divisibility)
    prepared = Batch(images, [size] * batch, [size] * batch)
    clock = Clock(predictor.device)
    marks: dict[str, list] = {}
    samples: dict[str, list[float]] = {stage: [] for stage in ("total", *STAGES, *POSTPROCESS_PARTS, UNATTRIBUTED)}
    kept: list[int] = []

    def run() -> dict[str, float]:
        clock.sync()
        start = clock.now()
        output = predictor.forward(prepared)
        post_start = clock.now()
        parts: dict[str, object] = {}
        instances = predictor.postprocess(output, prepared, on_stage=lambda part: parts.__setitem__(part, clock.now()),
                                          conf=0.0)  # every candidate's mask: the most post-processing costs
        end = clock.now()
        clock.sync()
        kept.append(sum(len(i) for i in instances))
        times = {"total": clock.seconds(start, end), "postprocess": clock.seconds(post_start, end),
                 "scores": clock.seconds(post_start, parts["scores"]),
                 "masks": clock.seconds(parts["scores"], parts["masks"])}
        for stage in MODULES:
            if stage in marks:
                times[stage] = clock.seconds(*marks[stage])
        if marks:
            times[UNATTRIBUTED] = times["total"] - sum(times[stage] for stage in STAGES)
        return times

    context = module_clock(predictor.model, clock, marks) if per_module else nullcontext()
    with context:
        for _ in range(warmup):
            run()
        kept.clear()
        for _ in range(runs):
            for stage, seconds in run().items():
                samples[stage].append(seconds)
    end_to_end = Stat.of(samples["total"])
    network = getattr(predictor.model, "_orig_mod", predictor.model)  # a compiled model's own module
    return Timing(
        name=name, input_size=size, padded_size=tuple(images.shape[-2:]), batch=batch, dtype=predictor.precision,
        device=str(predictor.device), runs=runs, end_to_end=end_to_end,
        fps=round(1000 * batch / end_to_end.median_ms, 2),
        modules={stage: Stat.of(samples[stage]) for stage in (*STAGES, *POSTPROCESS_PARTS, UNATTRIBUTED)
                 if samples[stage]},
        parameters=sum(p.numel() for p in network.parameters()),
        gflops=count_gflops(network, images.contiguous(memory_format=predictor.memory_format)),
        detections=round(sum(kept) / (len(kept) * batch), 2),
    )


def unattributed_fraction(timing: Timing) -> float:
    """The median share of the end-to-end time outside the timed stages (0 when they add up)."""
    return timing.modules[UNATTRIBUTED].median_ms / timing.end_to_end.median_ms


@dataclass
class TimingReport:
    """Timings of several models and sizes, measured in one process on one machine."""

    device: str
    threads: int
    torch: str
    timings: list[Timing]
    freed_memory_kept: bool = False  # glibc's malloc kept freed memory for reuse (sparseinst_cli.memory)

    @property
    def notices(self) -> list[Notice]:
        """Warnings about timings not to be trusted: runs that spread more than ``MAX_SPREAD``."""
        return [Notice(f"{t.name} at {t.input_size[0]}x{t.input_size[1]}: the slowest run took {t.spread:.1f}x the "
                       f"fastest; the machine was busy or still warming up, so time again with more runs",
                       setting="runs") for t in self.timings if t.spread > MAX_SPREAD]

    def to_json(self) -> dict:
        return {"device": self.device, "threads": self.threads, "torch": self.torch,
                "freed_memory_kept": self.freed_memory_kept, "timings": [t.to_json() for t in self.timings]}

    def save(self, path: Path) -> Path:
        return write_json(path, self.to_json())


def time_models(models: Sequence[ModelSource], sizes: Sequence[int] | None = None, *, image: Path | None = None,
                batch: int = 1, warmup: int = TIMING_WARMUP, runs: int = TIMING_RUNS, per_module: bool = True, threads: int = 0,
                progress: Progress = SILENT) -> TimingReport:
    """Time each model at each shorter side in ``sizes`` (default: its recipe's own test size;
    4:3 images, the longer side capped by the recipe's ``max_size_test`` unless the size passes
    it) on ``image`` (default: a demo scene). Per-module hooks need the PyTorch network as it is
    (not compiled, not an exported model on onnxruntime or OpenVINO)."""
    if not models or (sizes is not None and not sizes):
        raise SparseInstError("nothing to time: give at least one model and one size", setting="sizes")
    if any(size < MIN_SIZE for size in sizes or ()):
        raise SparseInstError(f"every size must be at least {MIN_SIZE}, got {list(sizes)}", setting="sizes")
    for name, value, least in (("batch", batch, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if value < least:
            raise SparseInstError(f"{name} must be at least {least}, got {value}", setting=name)
    if threads < 0:
        raise SparseInstError(f"threads must be 0 (torch's default) or more, got {threads}", setting="threads")
    if threads:
        torch.set_num_threads(threads)
    picture = read_image(image) if image is not None else render_image(0, "val", 1, TIMING_IMAGE_SIZE).image
    timings: list[Timing] = []
    for model in models:
        predictor = model.open(progress=progress)
        hooks = per_module and not model.compile and model.backend == Backend.torch
        for short in sizes or [predictor.recipe.input.min_size_test]:
            size = typical_size(short, max(predictor.recipe.input.max_size_test, short))
            progress.note(f"timing {model.name} at {size[0]}x{size[1]} ...")
            timings.append(time_predictor(predictor, picture, name=model.name, size=size, batch=batch, warmup=warmup,
                                          runs=runs, per_module=hooks))
    return TimingReport(device_name(models[0].device), torch.get_num_threads(), torch.__version__, timings,
                        freed_memory_kept())
