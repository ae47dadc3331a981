"""Training SparseInst on a COCO-format dataset (SPEC 2).

One ``Trainer`` per process. Under ``torchrun`` the model is wrapped in DDP, each process reads
its slice of every batch (``TrainingStream``) and only the main process writes files. The run
directory holds:

- ``last.pt``: everything ``--resume`` needs (weights, EMA, optimizer, schedule, scaler, step, RNG);
- ``model.safetensors``: the latest weights (the EMA's when kept) as a native checkpoint;
- ``recipe.json``, ``run.json``: the resolved recipe (solver in concrete steps) and the code
  version, the solver's resolution and what ``init_from`` loaded;
- ``metrics.jsonl``: mean losses over each log window, learning rate and throughput, and each
  evaluation;
- ``eval.json``: the last evaluation; ``curves.png``: the curves of ``metrics.jsonl``.

Both checkpoint files are written atomically; an interrupted run never leaves a broken one.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from components import build
from components.losses import Target, downsample_target_masks

from ..analysis.coco_eval import EVAL_FILE, evaluate_model
from ..builder import build_model
from ..checkpoint import read_checkpoint, save_checkpoint
from ..data.datasets import CocoInstances
from ..data.sampler import TrainingStream
from ..data.transforms import Collate, TrainBatch, TrainingSet, TrainTransform
from ..errors import RecipeError, RunFilesError, SparseInstError, TrainingError
from ..files import atomic_write, remove_stale_temporaries, write_json
from ..inference.predictor import INFERENCE_DTYPES, Predictor, resolve_precision
from ..progress import SILENT, Progress
from ..recipe import Recipe
from .calibration import calibrate
from .curves import save_curves
from .distributed import Process, all_reduce_sum, barrier, broadcast_from_main
from .ema import ModelEMA
from .run_log import METRICS_FILE, RunLog
from .solver import build_optimizer, build_scheduler, resolve_solver
from .transfer import TransferReport, initialize_from

STATE_FILE = "last.pt"
MODEL_FILE = "model.safetensors"
RECIPE_FILE = "recipe.json"
WORKER_TRACEBACK = "Original Traceback"  # how torch marks an exception re-raised from a worker
STATE_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "rng", "cuda_rng", "dataset_size")


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    interrupted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped_images: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # the signal that interrupted the run ("SIGINT", "SIGTERM")
    is_main: bool = True  # the process that wrote the files (under torchrun, rank 0)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (``docker stop``, Kubernetes, SLURM preemption) asks the run to
    stop after the current step; it then saves. A second Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None  # the name of the signal that asked, e.g. "SIGTERM"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = self.signal or signal.Signals(signum).name


def leave_stopping_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM. Ctrl-C in a terminal, ``timeout``, systemd
    and SLURM signal every process of the job; a worker killed by one made the main process raise
    (``DataLoader worker ... is killed by signal``) instead of saving. The main process shuts its
    workers down when it stops, and they exit on their own if it dies."""
    for signum in StopRequest.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def with_dataset_classes(recipe: Recipe, dataset: CocoInstances) -> Recipe:
    """The recipe with the class count and names of the training data.

    A recipe that names its classes or sets ``num_classes`` explicitly must agree with the data.
    """
    names = tuple(dataset.class_names)
    model = recipe.model
    if "num_classes" in model.model_fields_set and model.num_classes != len(names):
        raise RecipeError("model", [f"num_classes: the recipe says {model.num_classes} but the training data has "
                                    f"{len(names)} categories ({', '.join(names)})"])
    if model.class_names is not None and tuple(model.class_names) != names:
        raise RecipeError("model", [f"class_names: the recipe's {list(model.class_names)} differ from the training "
                                    f"data's {list(names)}"])
    return recipe.model_copy(update={"model": model.model_copy(update={"num_classes": len(names), "class_names": names})})


class Trainer:
    """``initialize=False`` skips ``init_from`` (a run about to ``resume()`` has its own weights).
    The main process reports to ``progress``."""

    def __init__(self, recipe: Recipe, out_dir: Path, process: Process = Process(), *, strict: bool = False,
                 progress: Progress = SILENT, initialize: bool = True) -> None:
        if recipe.data.train is None:
            raise RecipeError("data", ["data.train: a training recipe needs [data.train] annotations and images"])
        self.process, self.out_dir, self.strict = process, Path(out_dir), strict
        self.device = process.device
        self.train_set = CocoInstances(recipe.data.train.annotations, recipe.data.train.images, strict=strict,
                                       keep_ground_truth=False)
        self.val_set = (CocoInstances(recipe.data.val.annotations, recipe.data.val.images, strict=strict)
                        if recipe.data.val is not None else None)
        recipe = with_dataset_classes(recipe, self.train_set)
        self.solver_resolution = resolve_solver(recipe.train.solver, len(self.train_set))
        train = recipe.train.model_copy(update={"solver": self.solver_resolution.resolved,
                                                "precision": resolve_precision(recipe.train.precision, self.device)})
        self.precision_note = train.precision + (" (auto)" if recipe.train.precision == "auto" else "")
        self.recipe = recipe.model_copy(update={"train": train})
        self.categories = self.train_set.categories
        solver = train.solver
        per_process, remainder = divmod(solver.batch_size, solver.accumulate * process.world_size)
        if remainder or per_process == 0:
            raise RecipeError("train.solver", [f"batch_size: {solver.batch_size} images must split evenly over "
                                               f"{process.world_size} process(es) x accumulate {solver.accumulate}"])
        self.per_process = per_process

        torch.manual_seed(train.seed)  # the same recipe starts from the same weights
        self.model = build_model(self.recipe)
        self.transfer: TransferReport | None = None
        if initialize and self.recipe.model.init_from is not None:
            self.transfer = initialize_from(self.model, self.recipe)
        self.model.to(self.device).train()
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.network = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                                else None) if process.distributed else self.model)
        self.matcher = build("matcher", train.matcher.name, **train.matcher.arguments())
        self.criterion = build("loss", train.loss.name, num_classes=self.recipe.model.num_classes,
                               **train.loss.arguments())
        self.optimizer = build_optimizer(self.model, solver)
        self.scheduler = build_scheduler(self.optimizer, solver)
        self.autocast_dtype = INFERENCE_DTYPES[train.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.precision == "fp16")
        self.step = 0
        self.calibrated = not train.calibrate_init
        self.fresh_parameters = (self.transfer.fresh_parameters(self.model) if self.transfer is not None
                                 else {name for name, _ in self.model.named_parameters()})
        self.ema = ModelEMA(self.model, train.ema_decay, train.ema_warmup) if train.ema else None
        # Sums and counts of each logged value (loss terms, grad_norm) since the last record.
        self.log_window: dict[str, float] = {}
        self.log_window_counts: dict[str, int] = {}
        self.progress = progress if process.is_main else SILENT
        self.skipped_images: set[str] = set()

    # ---------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "calibrated": self.calibrated,
            "loss_window": {"sums": dict(self.log_window), "counts": dict(self.log_window_counts)},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.zeros(0),
            "dataset_size": len(self.train_set),
            "world_size": self.process.world_size,
        }

    def save(self) -> None:
        """Write ``model.safetensors`` and ``last.pt`` (main process only), each atomically. A
        kill between the two leaves them a checkpoint apart; ``resume`` brings them level."""
        if self.process.is_main:
            self._save_model()
            state = self.state_dict()
            atomic_write(self.state_path, lambda tmp: torch.save(state, tmp))
        barrier(self.process)

    def _save_model(self) -> None:
        extra = {"step": str(self.step), "weights": "ema" if self.ema is not None else "live"}
        save_checkpoint(self.out_dir / MODEL_FILE, self.inference_model, self.recipe, self.categories, extra)

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimizer, schedule, scaler, step and RNG."""
        state = self._read_state()
        if state["dataset_size"] != len(self.train_set):
            raise RunFilesError(f"{self.state_path}: saved for {state['dataset_size']} training images, "
                                f"the data now has {len(self.train_set)}")
        if self.ema is not None and state.get("ema") is None:
            raise RunFilesError(f"{self.state_path}: saved without EMA weights; resume with train.ema=false")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise RunFilesError(f"{self.state_path}: does not fit this run's model and solver (was the model "
                                f"changed with --set since?): {str(exc).splitlines()[0]}") from None
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.step = int(state["step"])
        self.calibrated = bool(state.get("calibrated", True))
        window = state.get("loss_window", {"sums": {}})
        self.log_window = dict(window["sums"])
        # Checkpoints written before per-value counts kept one count for all.
        self.log_window_counts = dict(window.get("counts") or {name: int(window["steps"]) for name in window["sums"]})
        if self.process.is_main:
            self._level_run_files()

    def _read_state(self) -> dict[str, Any]:
        """``last.pt``, checked to be a training state with every entry ``resume`` reads."""
        if not self.state_path.is_file():
            raise RunFilesError(f"{self.state_path}: nothing to resume from (no checkpoint in {self.out_dir})")
        try:
            state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - text, truncated or foreign files raise many types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunFilesError(f"{self.state_path}: not a readable training state ({reason})") from None
        missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
        if missing:
            raise RunFilesError(f"{self.state_path}: not a complete training state (missing {', '.join(missing)})")
        return state

    def _level_run_files(self) -> None:
        """After a kill: ``model.safetensors`` at the resumed step, no metrics from beyond it."""
        model_step = None
        with contextlib.suppress(Exception):  # a missing or broken model file is simply rewritten
            model_step = int(read_checkpoint(self.out_dir / MODEL_FILE).metadata.get("step", -1))
        if model_step != self.step:
            self._save_model()
        metrics = self.out_dir / METRICS_FILE
        if metrics.is_file():
            kept = [line for line in metrics.read_text().splitlines() if _logged_step(line) <= self.step]
            atomic_write(metrics, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))

    @property
    def inference_model(self) -> torch.nn.Module:
        """What validation and ``model.safetensors`` use: the EMA weights when they are kept."""
        return self.ema.module if self.ema is not None else self.model

    def write_run_files(self) -> None:
        if not self.process.is_main:
            return
        remove_stale_temporaries(self.out_dir)
        write_json(self.out_dir / RECIPE_FILE, self.recipe.dump())
        run = {
            "sparseinst": _package_version(),
            "git_commit": _git_commit(),
            "command": sys.argv,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(self.device),
            "world_size": self.process.world_size,
            "train_images": len(self.train_set),
            "val_images": len(self.val_set) if self.val_set is not None else 0,
            "solver": self.solver_resolution.summary(),
            "precision": self.precision_note,
        }
        previous = self.out_dir / "run.json"
        if self.transfer is not None:
            run["init_from"] = self.transfer.to_json()
        elif previous.is_file():  # a resumed run keeps the record of how it started
            started = json.loads(previous.read_text()).get("init_from")
            if started is not None:
                run["init_from"] = started
        write_json(self.out_dir / "run.json", run)

    # ---------------------------------------------------------------- data
    def loader(self) -> DataLoader:
        train = self.recipe.train
        stream = TrainingStream(
            len(self.train_set), seed=train.seed, start=self.step * train.solver.batch_size,
            per_process=self.per_process, rank=self.process.rank, world_size=self.process.world_size,
        )
        return DataLoader(
            TrainingSet(self.train_set, TrainTransform(train.augmentation), strict=self.strict),
            batch_size=self.per_process,
            sampler=stream,
            collate_fn=Collate(self.recipe.input),
            num_workers=train.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=leave_stopping_to_the_main_process,
        )

    @contextmanager
    def batches(self) -> Iterator[Iterator[TrainBatch]]:
        """The training batches; the data workers are shut down on leaving, however the run ends.

        The workers ignore stop signals (``leave_stopping_to_the_main_process``), so they must not
        be left to interpreter exit, where multiprocessing would only signal them and wait.
        """
        batches = iter(self.loader())
        try:
            yield batches
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)  # what the iterator's __del__ calls
            if shutdown is not None:
                shutdown()

    # ---------------------------------------------------------------- steps
    def train_step(self, batches: list[TrainBatch]) -> dict[str, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns the mean loss terms, their
        sum ``loss`` and, when the gradient norm is clipped, its norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict[str, float] = defaultdict(float)
        for micro, batch in enumerate(batches):
            batch = batch.to(self.device)
            last = micro == len(batches) - 1
            sync = nullcontext() if last or not self.process.distributed else self.network.no_sync()
            with sync:
                losses, total = self._losses(batch)
                self._check_finite(total, losses)
                self.scaler.scale(total / len(batches)).backward()
            for name, value in losses.items():
                logged[name] += float(value.detach()) / len(batches)
        logged["loss"] = sum(logged.values())
        solver = self.recipe.train.solver
        if solver.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            # Logged before clipping, so that a threshold can be chosen from a run's typical norms.
            logged["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), solver.clip_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return dict(logged)

    def autocast(self) -> torch.autocast:
        """The recipe's precision for the model's forward (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _losses(self, batch: TrainBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with self.autocast():
            output = self.network(batch.images.contiguous(memory_format=self.memory_format))
        size = tuple(output.masks.shape[-2:])
        targets = [Target(labels, downsample_target_masks(masks, size)) for masks, labels in
                   zip(batch.masks, batch.labels)]
        matches = self.matcher(output, targets)
        # SPEC 2: the instance count is averaged over processes and at least 1.
        count = torch.tensor([float(sum(len(t.labels) for t in targets))], device=self.device)
        num_instances = max(float(all_reduce_sum(count, self.process)) / self.process.world_size, 1.0)
        losses = self.criterion(output, targets, matches, num_instances)
        # Every head takes part in backward (even with a loss term switched off), as DDP requires.
        total = sum(losses.values()) + sum(0.0 * head.float().sum() for head in output[:3])
        return losses, total

    def _calibrate(self, batch: TrainBatch) -> None:
        images = batch.images.to(self.device).contiguous(memory_format=self.memory_format)
        result = calibrate(self.model, images, self.fresh_parameters)
        broadcast_from_main(self.model, self.process)  # each process calibrated on its own slice
        self.calibrated = True
        if self.ema is not None:
            self.ema.reset(self.model)
        self.progress.note(f"calibrated {len(result.factors)} fresh layers: initial mask logits' RMS "
                  f"{result.mask_logit_rms_before:.3g} -> {result.mask_logit_rms_after:.3g}")

    def _check_finite(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(total) else 1.0], device=self.device)
        if float(all_reduce_sum(bad, self.process)) == 0:
            return
        terms = [name for name, value in losses.items() if not torch.isfinite(value)] or ["(on another process)"]
        raise TrainingError(f"step {self.step + 1}: non-finite loss in {', '.join(terms)}; "
                            f"the last good checkpoint is {self.state_path}")

    def _stop_everywhere(self, requested: bool) -> bool:
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        return float(all_reduce_sum(flag, self.process)) > 0

    # ---------------------------------------------------------------- evaluation
    def validate(self) -> dict[str, Any]:
        """COCO mask AP on the validation set (main process), {} without one."""
        metrics: dict[str, Any] = {}
        if self.val_set is not None and self.process.is_main:
            predictor = Predictor(self.inference_model, self.recipe, self.categories, self.device)
            metrics = evaluate_model(predictor, self.val_set).to_json()
            self.model.train()
        barrier(self.process)
        return metrics

    # ---------------------------------------------------------------- loop
    def run(self, stop: StopRequest | None = None) -> TrainResult:
        """Train to ``max_iter``; save every ``checkpoint_period`` steps and at the end."""
        train = self.recipe.train
        solver = train.solver
        self.write_run_files()
        log = RunLog(self.out_dir if self.process.is_main else None, tensorboard=train.tensorboard)
        self.progress.start("train", solver.max_iter, completed=self.step, unit="it")
        result = TrainResult(self.step, self.out_dir)
        window_start, window_images = time.perf_counter(), 0
        with log, self.batches() as batches:
            while self.step < solver.max_iter:
                if self._stop_everywhere(stop is not None and stop.requested):
                    result.interrupted = True
                    result.stopped_by = getattr(stop, "signal", None)
                    break
                micro_batches = _next_batches(batches, solver.accumulate)
                if not self.calibrated:
                    self._calibrate(micro_batches[0])
                for batch in micro_batches:
                    self.skipped_images.update(batch.skipped)
                losses = self.train_step(micro_batches)
                for name, value in losses.items():
                    if math.isfinite(value):  # an fp16 step skipped for overflow has an infinite grad_norm
                        self.log_window[name] = self.log_window.get(name, 0.0) + value
                        self.log_window_counts[name] = self.log_window_counts.get(name, 0) + 1
                window_images += solver.batch_size
                self.progress.advance(completed=self.step, status=f"loss {losses['loss']:.3f}")
                if self.step % train.log_period == 0 or self.step == solver.max_iter:
                    elapsed = time.perf_counter() - window_start
                    means = {name: total / self.log_window_counts[name] for name, total in self.log_window.items()}
                    log.write({"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], **means,
                               "images_per_s": round(window_images / elapsed, 3)})
                    self.log_window, self.log_window_counts = {}, {}
                    window_start, window_images = time.perf_counter(), 0
                if self.step % train.checkpoint_period == 0 and self.step < solver.max_iter:
                    self.save()
                if train.eval_period and self.step % train.eval_period == 0 and self.step < solver.max_iter:
                    self._log_validation(log, result)
            self.save()
            if not result.interrupted:
                self._log_validation(log, result)
            if self.process.is_main:
                save_curves(self.out_dir)
        self.progress.stop()
        result.step = self.step
        result.skipped_images = sorted(self.skipped_images)
        return result

    def _log_validation(self, log: RunLog, result: TrainResult) -> None:
        metrics = self.validate()
        if metrics:
            result.metrics = metrics
            log.write({"step": self.step, "eval": {k: v for k, v in metrics.items() if k != "failures"}})
            if self.process.is_main:
                write_json(self.out_dir / EVAL_FILE, {"step": self.step, **metrics})
                self.progress.note(f"step {self.step}: mask AP {metrics['AP']}  AP50 {metrics['AP50']}  AP75 {metrics['AP75']}")


def _next_batches(batches: Iterator[TrainBatch], count: int) -> list[TrainBatch]:
    """``count`` batches; an error a DataLoader worker raised comes back as its own one line
    (torch adds the worker's traceback to the message)."""
    try:
        return [next(batches) for _ in range(count)]
    except SparseInstError as exc:
        if WORKER_TRACEBACK not in str(exc):
            raise
        raise type(exc)(str(exc).strip().splitlines()[-1].split(": ", 1)[-1]) from None


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line (infinite for a line cut short by a kill)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sparseinst")
    except PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
