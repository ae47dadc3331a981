"""Building a training run from a recipe: the one place in the engine that reads the recipe.

``build_training(recipe)`` reads the datasets (or takes them from the caller), resolves the
solver and precision, and builds the model, matcher, loss, optimizer, schedule, EMA and the
batches. A ``Trainer`` takes the built parts, as ``builder.build_model`` gives ``SparseInst`` its
built components.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from components import build

from ..builder import build_loss, build_model
from ..data.datasets import CocoInstances
from ..data.sampler import TrainingStream
from ..data.transforms import Collate, TrainBatch, TrainingSet, TrainTransform
from ..errors import RecipeError, SparseInstError
from ..inference.predictor import resolve_precision
from ..recipe import Recipe
from .distributed import Process
from .ema import ModelEMA
from .signals import leave_stopping_to_the_main_process
from .solver import SolverResolution, build_optimizer, build_scheduler, resolve_solver
from .transfer import TransferReport, initialize_from

WORKER_TRACEBACK = "Original Traceback"  # how torch marks an exception re-raised from a worker


@dataclass
class TrainingData:
    """How a run's batches are made: the dataset through its augmentation and collation, each
    step's samples drawn as ``(index, seed)`` pairs by a resumable stream and split over the
    processes. ``dataset`` is anything with ``CocoInstances``' reading interface (``len``,
    ``load(i)``, ``image_info(i)``), in memory or on disk."""

    dataset: Any
    transform: TrainTransform
    collate: Collate
    batch_size: int  # images per optimizer step, over all processes
    per_process: int  # images per forward pass of one process
    seed: int
    workers: int = 0
    strict: bool = False

    def loader(self, step: int, process: Process) -> DataLoader:
        """The batches from ``step`` on (the same ones an uninterrupted run would have had)."""
        stream = TrainingStream(len(self.dataset), seed=self.seed, start=step * self.batch_size,
                                per_process=self.per_process, rank=process.rank, world_size=process.world_size)
        return DataLoader(
            TrainingSet(self.dataset, self.transform, strict=self.strict),
            batch_size=self.per_process,
            sampler=stream,
            collate_fn=self.collate,
            num_workers=self.workers,
            pin_memory=process.device.type == "cuda",
            worker_init_fn=leave_stopping_to_the_main_process,
        )

    @contextmanager
    def batches(self, step: int, process: Process) -> Iterator[Iterator[TrainBatch]]:
        """The batches from ``step`` on; the data workers are shut down on leaving, however the run
        ends. They ignore stop signals (``leave_stopping_to_the_main_process``), so they must not be
        left to interpreter exit, where multiprocessing would only signal them and wait."""
        batches = iter(self.loader(step, process))
        try:
            yield batches
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)  # what the iterator's __del__ calls
            if shutdown is not None:
                shutdown()


def next_batches(batches: Iterator[TrainBatch], count: int) -> list[TrainBatch]:
    """``count`` batches; an error a DataLoader worker raised comes back as its own one line
    (torch adds the worker's traceback to the message)."""
    try:
        return [next(batches) for _ in range(count)]
    except SparseInstError as exc:
        if WORKER_TRACEBACK not in str(exc):
            raise
        raise type(exc)(str(exc).strip().splitlines()[-1].split(": ", 1)[-1]) from None


@dataclass
class TrainingParts:
    """Everything a ``Trainer`` runs, built: ``recipe`` is the resolved one (the training data's
    classes, the solver in concrete steps, the precision decided), as ``recipe.json`` keeps it."""

    recipe: Recipe
    data: TrainingData
    val_set: Any | None  # a CocoInstances with ground truth, or None: no validation
    categories: list[dict]
    model: nn.Module  # on the process's device, in training mode
    matcher: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # loss scaling for fp16, a pass-through otherwise
    ema: ModelEMA | None
    solver_resolution: SolverResolution
    precision_note: str  # e.g. "bf16 (auto)"
    transfer: TransferReport | None = None  # what init_from loaded
    fresh_parameters: set[str] = field(default_factory=set)  # what the start-of-training calibration may rescale


def build_training(recipe: Recipe, process: Process = Process(), *, strict: bool = False, initialize: bool = True,
                   train_set: Any = None, val_set: Any = None) -> TrainingParts:
    """The parts of a run of ``recipe`` on ``process``. The datasets come from the recipe's
    ``[data]`` section unless ``train_set`` is given (then ``val_set`` is used as given, None for
    no validation). ``initialize=False`` skips ``init_from`` (a run about to resume has its own
    weights); ``strict`` fails on a bad image or annotation instead of skipping it."""
    if train_set is None:
        if recipe.data.train is None:
            raise RecipeError("data", ["data.train: a training recipe needs [data.train] annotations and images"])
        train_set = CocoInstances(recipe.data.train.annotations, recipe.data.train.images, strict=strict,
                                  keep_ground_truth=False)
        val_set = (CocoInstances(recipe.data.val.annotations, recipe.data.val.images, strict=strict)
                   if recipe.data.val is not None else None)
    recipe = with_dataset_classes(recipe, train_set)
    resolution = resolve_solver(recipe.train.solver, len(train_set))
    train = recipe.train.model_copy(update={"solver": resolution.resolved,
                                            "precision": resolve_precision(recipe.train.precision, process.device)})
    precision_note = train.precision + (" (auto)" if recipe.train.precision == "auto" else "")
    recipe = recipe.model_copy(update={"train": train})
    solver = train.solver
    per_process, remainder = divmod(solver.batch_size, solver.accumulate * process.world_size)
    if remainder or per_process == 0:
        raise RecipeError("train.solver", [f"batch_size: {solver.batch_size} images must split evenly over "
                                           f"{process.world_size} process(es) x accumulate {solver.accumulate}"])
    data = TrainingData(train_set, TrainTransform(train.augmentation), Collate(recipe.input), solver.batch_size,
                        per_process, train.seed, train.workers, strict)

    torch.manual_seed(train.seed)  # the same recipe starts from the same weights
    model = build_model(recipe)
    transfer = initialize_from(model, recipe) if initialize and recipe.model.init_from is not None else None
    fresh = transfer.fresh_parameters(model) if transfer is not None else {name for name, _ in model.named_parameters()}
    model.to(process.device).train()
    model.to(memory_format=torch.channels_last if train.channels_last else torch.contiguous_format)
    optimizer = build_optimizer(model, solver)
    return TrainingParts(
        recipe=recipe,
        data=data,
        val_set=val_set,
        categories=list(train_set.categories),
        model=model,
        matcher=build("matcher", train.matcher.name, **train.matcher.arguments()),
        criterion=build_loss(recipe),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, solver),
        scaler=torch.amp.GradScaler(process.device.type, enabled=train.precision == "fp16"),
        ema=ModelEMA(model, train.ema_decay, train.ema_warmup) if train.ema else None,
        solver_resolution=resolution,
        precision_note=precision_note,
        transfer=transfer,
        fresh_parameters=fresh,
    )


def with_dataset_classes(recipe: Recipe, dataset: Any) -> Recipe:
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
