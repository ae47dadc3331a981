"""The training loop (SPEC 2): steps, checkpoints, validation, resume.

One ``Trainer`` per process runs the parts ``build.build_training`` made from a recipe. Under
``torchrun`` the model is wrapped in DDP, each process reads its slice of every batch and only
the main process writes the run's files (``run_directory.RunDirectory``) and announces events
(``callbacks``).

Each validation that gives a higher mask AP than every one before writes ``best.safetensors``;
with ``train.patience`` the run stops after that many validations in a row without one. A
checkpoint follows every validation, so ``last.pt`` always knows the best so far.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from components.losses import Target, downsample_target_masks

from ..analysis.coco_eval import evaluate_model
from ..data.transforms import TrainBatch
from ..errors import RunFilesError, TrainingError
from ..inference.predictor import INFERENCE_DTYPES, Predictor
from ..progress import SILENT, Progress
from ..recipe import Recipe
from .build import TrainingParts, build_training, next_batches
from .calibration import calibrate
from .callbacks import Callbacks, Handler, TrainingStart, report_progress
from .distributed import (
    Process,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    main_decides,
)
from .run_directory import BEST_FILE, RunDirectory
from .run_log import BestSoFar, LogWindow, RunLog
from .signals import StopRequest


@dataclass(frozen=True)
class EarlyStop:
    """Where ``train.patience`` ended a run: at ``step``, after ``patience`` validations in a row
    without a higher mask AP."""

    step: int
    patience: int

    def to_json(self) -> dict[str, int]:
        return {"step": self.step, "patience": self.patience}


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    interrupted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # the last validation's
    skipped_images: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # the signal that interrupted the run ("SIGINT", "SIGTERM")
    is_main: bool = True  # the process that wrote the files (under torchrun, rank 0)
    best: BestSoFar | None = None  # the best validation so far (main process), None before any AP
    best_path: Path | None = None  # best.safetensors, its weights
    stopped_early: EarlyStop | None = None


class Trainer:
    """Trains the built ``parts`` into the run directory ``out_dir`` on ``process``.

    ``Trainer.from_recipe(recipe, out_dir)`` builds the parts from a recipe first;
    ``add_callback(event, handler)`` follows the run (see ``callbacks``).
    """

    def __init__(self, parts: TrainingParts, out_dir: str | Path, process: Process = Process(), *,
                 callbacks: Callbacks | None = None) -> None:
        self.parts, self.process = parts, process
        self.recipe, self.data, self.val_set, self.categories = parts.recipe, parts.data, parts.val_set, parts.categories
        self.model, self.matcher, self.criterion = parts.model, parts.matcher, parts.criterion
        self.optimizer, self.scheduler, self.scaler, self.ema = parts.optimizer, parts.scheduler, parts.scaler, parts.ema
        self.transfer, self.fresh_parameters = parts.transfer, parts.fresh_parameters
        self.run_dir = RunDirectory(out_dir, writes=process.is_main)
        self.out_dir = self.run_dir.path
        self.device = process.device
        train = self.recipe.train
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.network = (DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                                else None) if process.distributed else self.model)
        self.autocast_dtype = INFERENCE_DTYPES[train.precision]
        self.step = 0
        self.calibrated = not train.calibrate_init
        self.log_window = LogWindow()
        self.callbacks = callbacks or Callbacks()
        self.skipped_images: set[str] = set()
        self.best = BestSoFar()
        self.resumed = False

    @classmethod
    def from_recipe(cls, recipe: Recipe, out_dir: str | Path, process: Process = Process(), *, strict: bool = False,
                    initialize: bool = True, progress: Progress = SILENT,
                    callbacks: Callbacks | None = None) -> Trainer:
        """``build_training(recipe, ...)``, then a trainer of its parts; ``progress`` sees the run."""
        callbacks = callbacks or Callbacks()
        if progress is not SILENT:
            report_progress(progress, callbacks)
        parts = build_training(recipe, process, strict=strict, initialize=initialize)
        return cls(parts, out_dir, process, callbacks=callbacks)

    def add_callback(self, event: str, handler: Handler) -> None:
        """Call ``handler(trainer, payload)`` on ``event`` (``callbacks.EVENTS``)."""
        self.callbacks.add(event, handler)

    def _announce(self, event: str, payload: Any) -> None:
        if self.process.is_main:
            self.callbacks.fire(event, self, payload)

    # ---------------------------------------------------------------- state
    @property
    def inference_model(self) -> torch.nn.Module:
        """What validation and ``model.safetensors`` use: the EMA weights when they are kept."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "calibrated": self.calibrated,
            "loss_window": self.log_window.state_dict(),
            "best": self.best.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.zeros(0),
            "dataset_size": len(self.data.dataset),
            "world_size": self.process.world_size,
        }

    def save(self) -> None:
        """Write ``model.safetensors`` and ``last.pt`` (main process only), each atomically. A
        kill between the two leaves them a checkpoint apart; ``resume`` brings them level."""
        if self.process.is_main:
            self._save_model()
            self.run_dir.save_state(self.state_dict())
            self._announce("on_checkpoint", self.run_dir.state)
        barrier(self.process)

    def _save_model(self) -> None:
        self.run_dir.save_model(self.inference_model, self.recipe, self.categories, step=self.step,
                                ema=self.ema is not None)

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimizer, schedule, scaler, step and RNG."""
        state = self.run_dir.read_state(self.device)
        path = self.run_dir.state
        if state["dataset_size"] != len(self.data.dataset):
            raise RunFilesError(f"{path}: saved for {state['dataset_size']} training images, "
                                f"the data now has {len(self.data.dataset)}")
        if self.ema is not None and state.get("ema") is None:
            raise RunFilesError(f"{path}: saved without EMA weights; resume with train.ema=false")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise RunFilesError(f"{path}: does not fit this run's model and solver (was the model "
                                f"changed with --set since?): {str(exc).splitlines()[0]}") from None
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.step = int(state["step"])
        self.calibrated = bool(state.get("calibrated", True))
        self.log_window.load_state_dict(state.get("loss_window", {"sums": {}}))
        self.best.load_state_dict(state.get("best", {}))  # checkpoints from before best.safetensors: none yet
        self._keep_a_better_best_file()
        self.resumed = True
        self.run_dir.level(self.step, self._save_model)

    def _keep_a_better_best_file(self) -> None:
        """A kill between writing ``best.safetensors`` and the checkpoint after it leaves a best
        file that ``last.pt`` does not know: keep it, as the best to beat."""
        written = self.run_dir.read_best() if self.process.is_main else None
        if written is not None and (self.best.ap is None or written["AP"] > self.best.ap):
            self.best.step, self.best.ap, self.best.ap50 = written["step"], written["AP"], written["AP50"]

    def _start_run_files(self) -> None:
        record: dict[str, Any] = {
            "device": str(self.device),
            "world_size": self.process.world_size,
            "train_images": len(self.data.dataset),
            "val_images": len(self.val_set) if self.val_set is not None else 0,
            "solver": self.parts.solver_resolution.summary(),
            "precision": self.parts.precision_note,
        }
        if self.transfer is not None:
            record["init_from"] = self.transfer.to_json()
        best = self.best.to_json(BEST_FILE)
        if best is not None:
            record["best"] = best
        self.run_dir.start(self.recipe, record, resumed=self.resumed)

    def _training_start(self) -> TrainingStart:
        datasets = {"train": getattr(self.data.dataset, "summary", None)}
        if self.val_set is not None:
            datasets["val"] = getattr(self.val_set, "summary", None)
        return TrainingStart(self.out_dir, self.step, self.recipe.train.solver.max_iter,
                             {name: summary for name, summary in datasets.items() if summary is not None},
                             self.parts.solver_resolution.summary(), self.parts.precision_note, self.transfer)

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
        self._announce("on_calibrated", result)

    def _check_finite(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(total) else 1.0], device=self.device)
        if float(all_reduce_sum(bad, self.process)) == 0:
            return
        terms = [name for name, value in losses.items() if not torch.isfinite(value)] or ["(on another process)"]
        raise TrainingError(f"step {self.step + 1}: non-finite loss in {', '.join(terms)}; "
                            f"the last good checkpoint is {self.run_dir.state}")

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
        """Train to ``max_iter``, or until ``train.patience`` validations in a row without a higher
        mask AP; save every ``checkpoint_period`` steps, after each validation and at the end."""
        train = self.recipe.train
        solver = train.solver
        if self.process.is_main:
            self._start_run_files()
        log = RunLog(self.out_dir if self.process.is_main else None, tensorboard=train.tensorboard)
        self._announce("on_train_start", self._training_start())
        result = TrainResult(self.step, self.out_dir)
        self.log_window.restart_clock()
        if main_decides(self.best.exhausted(train.patience), self.process):  # a resumed run that had stopped
            result.stopped_early = EarlyStop(self.step, train.patience)
        with log, self.data.batches(self.step, self.process) as batches:
            while self.step < solver.max_iter and result.stopped_early is None:
                if self._stop_everywhere(stop is not None and stop.requested):
                    result.interrupted = True
                    result.stopped_by = getattr(stop, "signal", None)
                    break
                micro_batches = next_batches(batches, solver.accumulate)
                if not self.calibrated:
                    self._calibrate(micro_batches[0])
                for batch in micro_batches:
                    self.skipped_images.update(batch.skipped)
                losses = self.train_step(micro_batches)
                self.log_window.add(losses, solver.batch_size)
                self._announce("on_step_end", losses)
                if self.step % train.log_period == 0 or self.step == solver.max_iter:
                    record = self.log_window.record(self.step, self.optimizer.param_groups[0]["lr"])
                    log.write(record)
                    self._announce("on_log", record)
                if self.step >= solver.max_iter:
                    break  # saved and validated below
                validated = (bool(train.eval_period) and self.step % train.eval_period == 0
                             and self._log_validation(log, result))
                if validated or self.step % train.checkpoint_period == 0:
                    self.save()  # after the validation, so that last.pt knows the best so far
                if validated and main_decides(self.best.exhausted(train.patience), self.process):
                    result.stopped_early = EarlyStop(self.step, train.patience)
            if self.best.validated != self.step:  # else saved just after this step's validation
                self.save()
            if not result.interrupted and result.stopped_early is None and self.best.validated != self.step:
                if self._log_validation(log, result):
                    self.save()
            elif not result.interrupted and self.run_dir.writes:  # validated before: its evaluation
                result.metrics = result.metrics or self.run_dir.read_evaluation(self.step)
            self._record_selection(result)
            self.run_dir.draw_curves()
        result.step = self.step
        result.skipped_images = sorted(self.skipped_images)
        self._announce("on_train_end", result)
        return result

    def _log_validation(self, log: RunLog, result: TrainResult) -> bool:
        """Validate, log it and keep the weights in ``best.safetensors`` when its AP is the best;
        on every process, whether the main process validated."""
        metrics = self.validate()
        if metrics:
            result.metrics = metrics
            log.write({"step": self.step, "eval": {k: v for k, v in metrics.items() if k != "failures"}})
            self.run_dir.save_evaluation(self.step, metrics)
            if self.best.update(self.step, metrics):
                self.run_dir.save_best(self.inference_model, self.recipe, self.categories, step=self.step,
                                       ema=self.ema is not None, ap=self.best.ap, ap50=self.best.ap50)
                self.run_dir.record(best=self.best.to_json(BEST_FILE))
            self._announce("on_validation_end", metrics)
        validated = main_decides(bool(metrics), self.process)
        if validated:
            self.best.validated = self.step  # on every process, which all decide on it
        return validated

    def _record_selection(self, result: TrainResult) -> None:
        """The best validation and an early stop, in the result and in ``run.json``."""
        if not self.process.is_main:
            return
        if self.best.step is not None:
            result.best, result.best_path = replace(self.best), self.run_dir.best
        self.run_dir.record(best=self.best.to_json(BEST_FILE),
                            stopped_early=result.stopped_early.to_json() if result.stopped_early else None)

