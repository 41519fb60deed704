"""torch.distributed glue: one process is the default; under ``torchrun`` the same code runs DDP.

gloo on CPU, NCCL on GPU. Rank 0 logs and checkpoints; data sources take their rank's slice of each global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); otherwise do nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers: what gets saved."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
