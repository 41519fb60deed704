"""Ways to carry a pretrained backbone to a task besides full fine-tuning: a linear probe, ULMFiT's gradual
unfreezing with discriminative learning rates, and LoRA adapters.

Each method is applied to a task module (``SequenceClassifier``) before training and returns a ``TransferMethod``:
how to build the optimizer, which schedule to force (if any) and which callbacks the one loop must run. The
Keras-style facade (``model.compile(method=...)``), ``transferlab finetune --method`` and ``transferlab compare``
all go through ``apply_method``.

LoRA is written here rather than taken from Hugging Face ``peft``: ``peft`` pulls in ``accelerate`` and the
``transformers`` model machinery as run-time dependencies, and its module matching by name patterns buys nothing
for our four ``nn.Linear`` layers per block. The whole adapter is a few lines (``LoRALinear``), and merging it back
gives a plain checkpoint in the usual format, loadable without any adapter code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import UserError
from ..models.base import layer_groups as backbone_layer_groups
from ..models.layers import Dropout
from ..training.callbacks import Callback
from ..training.distributed import world
from ..training.fsdp import check_strategy
from ..training.optim import build_optimizer, discriminative_param_groups

METHODS = ("finetune", "linear-probe", "gradual-unfreeze", "lora")
# The Linear layers of every block that get adapters: fused attention qkv, attention output, the two MLP layers.
LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


# Methods that change the model while it trains, which FSDP (parameters sharded at the start) cannot follow.
NOT_WITH_FSDP = {
    "lora": "LoRA merges its adapters into the base weights when training ends, replacing layers that FSDP holds "
            "sharded",
}
NOT_DATA_PARALLEL = {
    "gradual-unfreeze": "gradual unfreezing turns gradients on while training runs, and DDP and FSDP both fix at "
                        "their first step which gradients they reduce (measured: DDP stops with an error about "
                        "parameters that received no gradient; under FSDP the weights drift from one process's)",
}


def check_distributed(method: str | None, distributed: str) -> None:
    """Refuse an unknown ``distributed``, or a transfer method that cannot run under it or under several
    processes (``UserError``s)."""
    check_strategy(distributed)
    if method in NOT_DATA_PARALLEL and (distributed == "fsdp" or world()[1] > 1):
        raise UserError(f"--method {method} cannot run data-parallel (torchrun, --distributed): "
                        f"{NOT_DATA_PARALLEL[method]}. Run it in one process, or use --method finetune or "
                        f"linear-probe under torchrun.")
    if distributed == "fsdp" and method in NOT_WITH_FSDP:
        raise UserError(f"--method {method} cannot be combined with --distributed fsdp: {NOT_WITH_FSDP[method]}. "
                        f"Use --distributed ddp, or --method finetune or linear-probe with fsdp.")


def set_trainable(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters (elements) that currently receive gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def freeze_backbone(module: nn.Module) -> None:
    """Linear probe: the backbone keeps its pretrained weights; only the task head trains."""
    set_trainable(module.parameters(), False)
    set_trainable(module.heads.parameters(), True)


def layer_groups(module: nn.Module) -> list[list[nn.Parameter]]:
    """ULMFiT's layer groups of a task module, bottom first: the backbone's stem, each of its blocks (the last with
    what follows it, e.g. a final LayerNorm), then the heads (``models.base.layer_groups``)."""
    return backbone_layer_groups(module.backbone, module.heads)


class GradualUnfreeze(Callback):
    """ULMFiT: train only the top group in the first epoch, then unfreeze one more group (from the top) per epoch.

    A run shorter than one epoch per group (a step cap, or many groups) unfreezes at evenly spaced steps instead,
    so that every group trains for part of the run rather than the lower ones never.
    """

    def __init__(self, groups: list[list[nn.Parameter]], module: nn.Module | None = None):
        self.groups = groups
        self.module = module  # the task module, whose frozen BatchNorms must follow the groups (TaskModule.train)
        self.unfrozen = 1
        self.every = 1

    def _set_modes(self) -> None:
        if self.module is not None and self.module.training:
            self.module.train()

    def on_fit_start(self, state):
        for g in self.groups:
            set_trainable(g, False)
        set_trainable(self.groups[-1], True)
        self._set_modes()
        self.unfrozen = 1
        per_epoch = state.steps_per_epoch or state.max_steps
        if state.max_steps >= per_epoch * len(self.groups):
            self.every = per_epoch
        else:
            self.every = max(1, state.max_steps // len(self.groups))

    def on_step_end(self, state, logs):
        if state.step % self.every or state.step >= state.max_steps or self.unfrozen >= len(self.groups):
            return
        self.unfrozen += 1
        set_trainable(self.groups[-self.unfrozen], True)
        self._set_modes()


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = base(x) + (alpha / r) * x A^T B^T``.

    B starts at zero, so the wrapped model computes exactly what the pretrained one did (Hu et al. 2021).
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.base = base
        set_trainable(base.parameters(), False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as in the paper's code
        self.scaling = alpha / rank
        self.drop = Dropout(dropout) if dropout else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        """The merged weight, for callers that use the matrix directly (cross-attention splits qkv.weight)."""
        return self.base.weight + self.scaling * (self.lora_b @ self.lora_a)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * ((self.drop(x) @ self.lora_a.t()) @ self.lora_b.t())

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded in."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.to(self.base.weight.device)


def apply_lora(module: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets=LORA_TARGETS) -> list[str]:
    """Wrap the ``targets`` Linear layers of every backbone block in ``LoRALinear``; freeze everything else in the
    backbone and keep the heads trainable.

    Returns:
        the names of the wrapped layers (e.g. ``backbone.h.0.attn.qkv``).
    """
    if rank < 1:
        raise UserError(f"LoRA rank must be at least 1 (got {rank}); typical values are 4-16.")
    if any(isinstance(m, LoRALinear) for m in module.modules()):
        raise UserError("this model already has LoRA adapters; build a fresh model (from_pretrained) to apply "
                        "another method.")
    blocks = module.backbone.blocks
    if not blocks or not all(_has_submodule(b, t) for b in blocks for t in targets):
        raise UserError(f"LoRA adapts the attention and MLP layers of transformer blocks; a "
                        f"{module.config.family} backbone has none. Use --method finetune, linear-probe or "
                        f"gradual-unfreeze.")
    set_trainable(module.parameters(), False)
    wrapped = []
    for i, block in enumerate(blocks):
        for target in targets:
            parent_name, attr = target.rsplit(".", 1)
            parent = block.get_submodule(parent_name)
            layer = getattr(parent, attr)
            if not isinstance(layer, nn.Linear):
                raise UserError(f"LoRA target '{target}' of block {i} is a {type(layer).__name__}, not nn.Linear.")
            setattr(parent, attr, LoRALinear(layer, rank, alpha, dropout))
            wrapped.append(f"{_block_name(module.backbone, block)}.{target}")
    set_trainable(module.heads.parameters(), True)
    return wrapped


def _has_submodule(block: nn.Module, target: str) -> bool:
    try:
        block.get_submodule(target)
        return True
    except AttributeError:
        return False


def _block_name(backbone: nn.Module, block: nn.Module) -> str:
    return "backbone." + next(name for name, m in backbone.named_modules() if m is block)


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its base layer in place; the module is then a plain model again (same state-dict
    keys as any checkpoint, every parameter trainable). Returns the number of merged layers."""
    merged = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                merged += 1
    if merged:
        set_trainable(module.parameters(), True)
    return merged


class MergeLoRA(Callback):
    """Merge the adapters when training ends, before the loop saves RUN/final, so the checkpoint is a plain one."""

    def on_fit_end(self, state):
        merge_lora(state.module)


@dataclass
class TransferMethod:
    """What a transfer method asks of the training run.

    ``schedule`` overrides the compiled schedule when set (gradual unfreezing uses slanted triangular);
    ``make_callbacks(module)`` returns fresh callbacks for one ``fit``.
    """

    name: str
    schedule: str | None = None
    lr_decay: float | None = None  # discriminative LR factor between layer groups
    callback_factories: list[Callable[[nn.Module], Callback]] = field(default_factory=list)

    def optimizer(self, module: nn.Module, lr: float, weight_decay: float, name: str = "adamw"):
        groups = None
        if self.lr_decay is not None:
            groups = discriminative_param_groups(layer_groups(module), lr, weight_decay, self.lr_decay)
        return build_optimizer(module, lr, weight_decay, name=name, groups=groups)

    def make_callbacks(self, module: nn.Module) -> list[Callback]:
        return [make(module) for make in self.callback_factories]


def apply_method(module: nn.Module, method: str = "finetune", *, lora_rank: int = 8, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.0, lr_decay: float = 2.6) -> TransferMethod:
    """Prepare ``module`` for ``method`` (freezing, adapters) and say how to train it.

    Args:
        module: a task module fresh from ``from_pretrained`` (or its scratch twin).
        method: "finetune" (every weight trains), "linear-probe" (frozen backbone), "gradual-unfreeze"
            (ULMFiT: LR divided by ``lr_decay`` per group going down, slanted triangular schedule, one more group
            unfrozen per epoch from the top), or "lora" (adapters of rank ``lora_rank`` + the head).
    Returns:
        a ``TransferMethod``.
    """
    if method not in METHODS:
        raise UserError(f"unknown transfer method '{method}'; choose one of {', '.join(METHODS)}.")
    if method == "finetune":
        set_trainable(module.parameters(), True)
        return TransferMethod(method)
    if method == "linear-probe":
        freeze_backbone(module)
        return TransferMethod(method)
    if method == "gradual-unfreeze":
        if lr_decay < 1:
            raise UserError(f"lr_decay must be >= 1 (got {lr_decay}): lower layers get the LR divided by it; "
                            f"ULMFiT uses 2.6.")
        set_trainable(module.parameters(), True)  # the callback freezes all but the top group when training starts
        return TransferMethod(method, schedule="slanted", lr_decay=lr_decay,
                              callback_factories=[lambda m: GradualUnfreeze(layer_groups(m), m)])
    apply_lora(module, lora_rank, lora_alpha, lora_dropout)
    return TransferMethod(method, callback_factories=[lambda m: MergeLoRA()])
