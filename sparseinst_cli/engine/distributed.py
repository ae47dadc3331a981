"""torch.distributed set-up for ``torchrun`` launches; a single process needs none of it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..inference.predictor import resolve_device


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start_process(device: str) -> Process:
    """Join the process group ``torchrun`` describes (nccl on CUDA, gloo on CPU), or run alone."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Process(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Process(dist.get_rank(), dist.get_world_size(), chosen)


def stop_process(process: Process) -> None:
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, process: Process) -> torch.Tensor:
    """Sum over processes (in place and returned); unchanged for a single process."""
    if process.distributed:
        dist.all_reduce(values)
    return values


def barrier(process: Process) -> None:
    if process.distributed:
        dist.barrier()


def broadcast_from_main(module: torch.nn.Module, process: Process) -> None:
    """Give every process the main process's parameters and buffers (in place)."""
    if process.distributed:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def main_decides(flag: bool, process: Process) -> bool:
    """The main process's ``flag`` on every process (a decision only the main process can make,
    such as stopping early on its validation), unchanged for a single process."""
    if not process.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=process.device)
    dist.broadcast(value, src=0)
    return bool(value.item())
