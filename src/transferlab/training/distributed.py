"""torch.distributed glue: one process is the default; under ``torchrun`` the same code runs DDP (or FSDP, fsdp.py).

gloo on CPU, NCCL on GPU. Rank 0 logs and checkpoints; data sources take their rank's slice of each global batch.
"""

from __future__ import annotations

import contextlib
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
        if device.startswith("cuda"):  # one GPU per process: "cuda" then means this rank's own device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return world()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def token_weight(n_local: int, world_size: int, device: torch.device | str = "cpu") -> float:
    """Factor that turns this rank's mean loss over its ``n_local`` predictions into its share of the mean over
    every rank's predictions: ``n_local * world_size / n_global``.

    DDP averages gradients over ranks, so mean losses weigh each rank equally; masked LM selects a different number
    of tokens on each rank, and the result would differ from one process training on the global batch. Scaled by
    this factor, the averaged gradient is exactly the single-process one (up to float rounding).
    """
    count = torch.tensor([float(n_local)], device=device)  # NCCL reduces only GPU tensors
    dist.all_reduce(count)
    return n_local * world_size / max(float(count), 1.0)


def mean_over_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of a float over ranks (the value itself in one process): what rank 0 logs."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers: what gets saved."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def grad_sync(model: torch.nn.Module, sync: bool):
    """Context for one micro-batch's forward: reduce gradients over ranks only when ``sync`` (the last micro-batch
    of an accumulation step).

    DDP decides in the forward pass (``no_sync()``); FSDP in the backward pass, which runs after this context has
    closed, so its flag is set here and stays until the next micro-batch sets it again.
    """
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP-sharded
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else model.no_sync()
