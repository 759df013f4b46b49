"""One helper for distributed training that also works as a single process on CPU or one GPU.

Launch with ``torchrun --nproc_per_node=N script.py ...``: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK,
:func:`init_distributed` reads them and picks NCCL on CUDA and gloo on CPU. Without them the script
runs as one ordinary process.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from misc.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Start the process group when launched by torchrun; return rank, world size and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    """Average a python number over ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def finish(info: DistInfo, exit_code: int = 0) -> None:
    """End a (possibly distributed) run.

    With gloo, about one run in ten aborts at interpreter exit ("terminate called without an active
    exception") after training has finished. Tearing the process group down, flushing, and leaving
    through ``os._exit`` skips the interpreter shutdown that triggers it.
    """
    if not info.distributed:
        return
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
