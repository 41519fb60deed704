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


def _casts_every_call(m: torch.nn.Module) -> bool:
    """A module whose forward is one op autocast runs in bf16 (matmul, convolution), so a bf16 weight gives what
    autocast's per-call cast gives. Exact types: a subclass (LoRA's wrapped Linear) may do fp32 arithmetic on its
    weight first."""
    return type(m) in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)


@contextlib.contextmanager
def inference_weights(module: torch.nn.Module, precision: str):
    """Hold the weights bf16 autocast would cast on every call in bf16 for the duration, for inference.

    Under autocast every Linear (and convolution) casts its fp32 weight and bias to bf16 on every call: 13% of the
    small text preset's forward at batch 1 (29.6 against 25.6 ms, a CPU-clock A/B, docs/performance.md).
    Casting once here gives the same bf16 values (the same round-to-nearest), so autocast's matmuls see the same
    operands and the outputs are unchanged; LayerNorm and embeddings stay fp32 as autocast runs them. On exit the
    fp32 weights are put back in place (the optimizer's parameters are the same objects), so a model in training
    can be evaluated under it. With ``precision`` other than "bf16" it changes nothing.

    Args:
        module: the model; call inside ``torch.no_grad()`` or ``torch.inference_mode()``.
        precision: the resolved precision ("bf16" or "fp32").
    """
    swapped = []
    if precision == "bf16":
        # a weight also used by another module (tied to an embedding) must keep its fp32 values there
        shared = {id(p) for m in module.modules() if not _casts_every_call(m) for p in m.parameters(recurse=False)}
        for m in module.modules():
            if _casts_every_call(m):
                for p in m.parameters(recurse=False):
                    # plain tensors only: FSDP's sharded parameters (DTensors) are swapped by FSDP itself
                    if p.dtype == torch.float32 and id(p) not in shared and type(p.data) is torch.Tensor:
                        swapped.append((p, p.data))
                        p.data = p.data.to(torch.bfloat16)
    try:
        yield module
    finally:
        for p, data in swapped:
            p.data = data


def configure_cpu() -> None:
    """Flush denormals to zero: a denormal-heavy matmul runs ~100x slower on CPU (see DESIGN.md)."""
    torch.set_flush_denormal(True)
