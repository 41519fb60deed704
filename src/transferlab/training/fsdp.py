"""FSDP: parameters, gradients and optimizer state sharded over the ranks, for models that do not fit one device.

This is PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): one FSDP unit per transformer block, then the
root (embeddings, final norm, heads). It shards in place, so the module keeps its class and parameter names and
``distributed.unwrap`` needs no special case; a block's full weights exist only while that block runs.

Checkpoints keep the one format of ``checkpoint.py``: the full weights are gathered to rank 0 (on CPU) and written
as ``model.safetensors``, and the optimizer state in the single-process layout (keyed by parameter index), so a
run saved under FSDP resumes under DDP or in one process, and the other way round; resuming loads the full state
dicts back into the sharded model.

Precision needs nothing here: the sharded master weights stay fp32 and the loop's autocast does the bf16 compute,
as without FSDP (no ``MixedPrecisionPolicy``, so gradients are also reduced in fp32). Nor does clipping: the loop's
``clip_grad_norm_`` sees DTensor gradients, reduces their shards' norms over ranks into the norm of the whole
gradient, and every rank scales its shard by the same factor (tests/test_fsdp.py fails when each rank clips its
shard by its own norm).
"""

from __future__ import annotations

import torch

from ..errors import UserError

from .settings import STRATEGIES  # declared with the other training settings


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise UserError(f"unknown --distributed '{strategy}'; choose ddp (a full model copy on every rank) or fsdp "
                        f"(parameters, gradients and optimizer state sharded over the ranks).")


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard(module: torch.nn.Module, device: torch.device, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Shard ``module`` in place over every rank: each transformer block its own unit, then the root.

    Args:
        module: the task module, on CPU or on ``device``; ``fully_shard`` moves each rank's shards to the device.
            A module sharded by an earlier run (``fit`` called again) is left as it is.
        device: this rank's device; the mesh uses its type (gloo on CPU, NCCL on CUDA, as the process group).
        optimizer: an optimizer built before sharding (the facade builds its own); its parameter groups are
            pointed at the sharded parameters, which replace the originals.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..models.layers import Block

    if is_sharded(module):
        return
    if optimizer is not None and optimizer.state:
        raise UserError("--distributed fsdp: the optimizer passed to training has already taken steps; its state "
                        "cannot be sharded. Pass a fresh optimizer (or an optimizer name) to compile/fit.")
    names = {id(p): n for n, p in module.named_parameters()}
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # Collected first: fully_shard swaps each block's class while the tree is being walked.
    for block in [m for m in module.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    if optimizer is not None:
        sharded = dict(module.named_parameters())
        try:
            for group in optimizer.param_groups:
                group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        except KeyError:
            raise UserError("--distributed fsdp: the optimizer holds parameters that are not the model's; build "
                            "it over model.parameters().") from None


def _fqn_order(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter names in the optimizer's index order (the keys of ``optimizer.state_dict()``)."""
    names = {id(p): n for n, p in module.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _rekey(state: dict, mapping) -> dict:
    return {"state": {mapping(k): v for k, v in state["state"].items()},
            "param_groups": [dict(g, params=[mapping(k) for k in g["params"]]) for g in state["param_groups"]]}


def full_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
               ) -> tuple[dict | None, dict | None]:
    """Full (unsharded) model and optimizer state dicts of a sharded module, on CPU, on rank 0 (None elsewhere).

    A collective: every rank must call it. For a module that is not sharded it returns (None, None) and the
    caller saves ``module.state_dict()`` / ``optimizer.state_dict()`` as always.
    """
    if not is_sharded(module):
        return None, None
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(module, options=options)
    optim = None
    if optimizer is not None:
        by_name = get_optimizer_state_dict(module, optimizer, options=options)
        if dist.get_rank() == 0:  # keyed by name; saved keyed by index, as a single process saves it
            index = {n: i for i, n in enumerate(_fqn_order(module, optimizer))}
            optim = _rekey(by_name, index.__getitem__)
    return (weights, optim) if dist.get_rank() == 0 else (None, None)


def load_model_state(module: torch.nn.Module, weights: dict) -> None:
    """Load full weights into ``module``, sharding them when it is sharded."""
    if not is_sharded(module):
        module.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, weights, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimizer state dict in the single-process layout, sharding it when ``module`` is sharded."""
    if not is_sharded(module):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    order = _fqn_order(module, optimizer)
    n_saved = sum(len(g["params"]) for g in state["param_groups"])
    if n_saved != len(order):  # the same message optimizer.load_state_dict gives a single process
        raise ValueError(f"the saved state has {n_saved} parameters, this optimizer {len(order)}")
    set_optimizer_state_dict(module, optimizer, _rekey(state, order.__getitem__),
                             options=StateDictOptions(full_state_dict=True))
