"""Precision is one setting resolved in one place.

``auto`` picks bf16 autocast where the hardware runs bf16 matmuls natively (AMX / AVX512-BF16 on CPU, Ampere+ on
CUDA) and fp32 elsewhere. Master weights, optimizer state and losses stay fp32 either way.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from ..errors import UserError

from .settings import PRECISIONS  # declared with the other training settings


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device | str = "cpu"):
    """Context manager for the forward pass under the resolved precision."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_cpu() -> None:
    """Flush denormals to zero: a denormal-heavy matmul runs ~100x slower on CPU (see DESIGN.md)."""
    torch.set_flush_denormal(True)
