"""Learning-rate schedule, optimizer groups and the deterministic training stream."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from sparseinst_cli.data.sampler import TrainingStream, sample_key
from sparseinst_cli.engine.solver import build_optimizer, build_scheduler, lr_factor
from sparseinst_cli.recipe import SolverSection


def test_official_schedule() -> None:
    solver = SolverSection()  # warm-up 1000 from 0.001, x0.1 at 210k and 250k
    assert lr_factor(0, solver) == pytest.approx(0.001)
    assert lr_factor(500, solver) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(1000, solver) == 1.0
    assert lr_factor(209_999, solver) == 1.0
    assert lr_factor(210_000, solver) == pytest.approx(0.1)
    assert lr_factor(250_000, solver) == pytest.approx(0.01)


def test_cosine_schedule() -> None:
    solver = SolverSection(schedule="cosine", max_iter=100, warmup_iters=0)
    assert lr_factor(0, solver) == 1.0
    assert lr_factor(50, solver) == pytest.approx(0.5)
    assert lr_factor(100, solver) == pytest.approx(0.0)


def test_scheduler_drives_the_optimizer() -> None:
    model = nn.ModuleDict({"backbone": nn.Linear(2, 2), "decoder": nn.Linear(2, 2)})
    model["backbone"].bias.requires_grad_(False)
    solver = SolverSection(lr=1e-3, backbone_lr_factor=0.1, warmup_iters=10, warmup_factor=0.5, lr_steps=(20,))
    optimizer = build_optimizer(model, solver)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 1]  # frozen bias left out
    scheduler = build_scheduler(optimizer, solver)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-5])
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-5])


def test_batch_must_split_over_accumulation() -> None:
    with pytest.raises(ValueError, match="multiple of accumulate"):
        SolverSection(batch_size=6, accumulate=4)


def test_stream_visits_every_image_once_per_epoch() -> None:
    keys = list(itertools.islice(TrainingStream(10, seed=3, start=0, per_process=2), 20))
    assert sorted(k[0] for k in keys[:10]) == list(range(10))
    assert sorted(k[0] for k in keys[10:]) == list(range(10))
    assert [k[0] for k in keys[:10]] != [k[0] for k in keys[10:]]  # a new order each epoch
    assert len({k[1] for k in keys}) == 20  # a distinct augmentation seed per position


def test_stream_resumes_and_splits_over_processes() -> None:
    single = list(itertools.islice(TrainingStream(7, seed=1, start=0, per_process=4), 12))
    resumed = list(itertools.islice(TrainingStream(7, seed=1, start=4, per_process=4), 8))
    assert resumed == single[4:]
    ranks = [list(itertools.islice(TrainingStream(7, seed=1, start=0, per_process=2, rank=r, world_size=2), 6))
             for r in range(2)]
    merged = [key for step in range(3) for r in range(2) for key in ranks[r][2 * step: 2 * step + 2]]
    assert merged == single
    assert sample_key(5, 7, 1) == single[5]


def test_different_seeds_give_different_orders() -> None:
    first = [sample_key(p, 50, 0)[0] for p in range(50)]
    second = [sample_key(p, 50, 1)[0] for p in range(50)]
    assert first != second and sorted(first) == sorted(second)
    assert torch.equal(torch.tensor(first), torch.tensor([sample_key(p, 50, 0)[0] for p in range(50)]))
