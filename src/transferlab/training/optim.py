"""Optimizers, parameter groups and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UserError

from .settings import OPTIMIZERS, SCHEDULES  # declared with the other training settings
# Slanted triangular (ULMFiT, Howard & Ruder 2018): the peak LR is this many times the LR at the ends.
SLANTED_RATIO = 32


def param_groups(module: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Decay matrices; leave biases, LayerNorm and other 1-D parameters undecayed (BERT's recipe)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


# Fine-tuning learning rates at two widths of the text presets. The tiny preset (d_model 128): 1e-3 is what its
# SST-2 grids use (docs/results/README.md: 0.708 +- 0.009 at 1,000 labels, 3e-4 gave 0.708 +- 0.003 with 10 epochs
# but left 94 steps at chance), while BERT-base's 5e-5 left it at chance (0.509 after an epoch on 2,000 labels,
# issue 20; docs/results/cpuhour.md). BERT-base (768): Devlin et al. 2019's range, 5e-5 to 2e-5.
FINETUNE_LR_ANCHORS = ((128, 1e-3), (768, 5e-5))


# Pretraining learning rates of the text presets with the default recipe (Muon + wsd, batch 64 x 128): at 10
# CPU-minutes tiny (128) did best at 3e-3 and mini (256) at 3e-3 rather than 1.5e-3 (docs/results/cpuhour.md, "The
# recipe sweep"); BERT-base (768) is Devlin et al. 2019's 1e-4 (at batch 256), not measured here.
PRETRAIN_LR_ANCHORS = ((128, 3e-3), (256, 3e-3), (768, 1e-4))


def _power_law(anchors: tuple, d_model: int) -> float:
    """A power law in the width through each pair of neighbouring ``anchors`` ((d_model, lr), ...), held at the end
    values outside them; two significant digits."""
    d = min(max(d_model, anchors[0][0]), anchors[-1][0])
    for (d0, lr0), (d1, lr1) in zip(anchors, anchors[1:]):
        if d <= d1:
            return float(f"{lr0 * (lr1 / lr0) ** (math.log(d / d0) / math.log(d1 / d0)):.2g}")
    return anchors[-1][1]


def default_finetune_lr(d_model: int) -> float:
    """The default fine-tuning learning rate of a text model of width ``d_model``: a power law in the width through
    ``FINETUNE_LR_ANCHORS``, held at the end values outside them.

    Returns:
        the learning rate, rounded to two significant digits (tiny 1e-3, mini 3.1e-4, small 9.8e-5, base 5e-5).
    """
    return _power_law(FINETUNE_LR_ANCHORS, d_model)


def default_pretrain_lr(d_model: int) -> float:
    """The default pretraining learning rate of a text model of width ``d_model``, through ``PRETRAIN_LR_ANCHORS``
    (tiny and mini 3e-3, small and medium 3.5e-4, base 1e-4)."""
    return _power_law(PRETRAIN_LR_ANCHORS, d_model)


def default_lr_for(modality: str, d_model: int | None) -> float:
    """The fine-tuning learning rate used when none is given: from the width for text models
    (``default_finetune_lr``), BERT's 5e-5 for other modalities (their recipes set their own)."""
    return default_finetune_lr(d_model) if modality == "text" else 5e-5


def default_lr_line(lr: float, modality: str, d_model: int | None) -> str:
    """What a run prints when it chose its learning rate: "lr 1e-3 (default for d_model 128; --lr to change it)"."""
    what = f"d_model {d_model}" if modality == "text" else f"{modality} models"
    return f"lr {format_lr(lr)} (default for {what}; --lr to change it)"


def format_lr(lr: float) -> str:
    """1e-3, 3.1e-4: a learning rate as it is written on the command line."""
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def build_optimizer(module: nn.Module, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8,
                    name: str = "adamw", groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """``groups``: explicit parameter groups (e.g. ``discriminative_param_groups``); default BERT's decay split."""
    groups = param_groups(module, weight_decay) if groups is None else groups
    # The fused kernel updates every tensor in one pass: 7x less optimizer time than the per-tensor loop for the
    # mini preset on CPU (56 -> 8 ms a step), 2.8x for small; same update up to float rounding.
    fused = {"fused": True} if all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                   for g in groups for p in g["params"]) else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, **fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "muon":
        muon, adamw = muon_param_groups(module, groups)
        return MuonAdamW(muon, adamw, lr=lr, betas=betas, eps=eps, fused=bool(fused))
    raise UserError(f"unknown optimizer '{name}'; choose {', '.join(OPTIMIZERS)}.")


def trunk_matrices(module: nn.Module) -> set[int]:
    """ids of the parameters Muon updates: the 2-D weights inside the blocks of every backbone in ``module``.

    Muon orthogonalises a matrix's update, which suits the trunk's linear maps (attention and MLP projections).
    Embedding tables are looked up row by row, so a whole-matrix update makes no sense for them, and heads (the
    tied LM head is the embedding; a classifier maps to a handful of labels) are left to AdamW as in Jordan et al.
    2024 and Liu et al. 2025; so are biases, norms and convolution kernels (4-D, which torch's Muon refuses).
    """
    from ..models.base import Backbone

    ids = set()
    for backbone in (m for m in module.modules() if isinstance(m, Backbone)):
        for block in backbone.blocks:
            ids |= {id(p) for p in block.parameters() if p.ndim == 2}
    return ids


def muon_param_groups(module: nn.Module, groups: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split optimizer parameter groups in two: the trunk's matrices (``trunk_matrices``) for Muon, everything
    else for AdamW. Each half keeps its group's options (lr, weight decay), so discriminative learning rates and
    the decay split carry over; every parameter lands in exactly one group.

    Returns:
        (Muon groups, AdamW groups), empty groups dropped.
    """
    trunk = trunk_matrices(module)
    muon, adamw = [], []
    for g in groups:
        params = list(g["params"])
        options = {k: v for k, v in g.items() if k != "params"}
        muon.append({**options, "params": [p for p in params if id(p) in trunk]})
        adamw.append({**options, "params": [p for p in params if id(p) not in trunk]})
    muon, adamw = [g for g in muon if g["params"]], [g for g in adamw if g["params"]]
    if not muon:
        raise UserError("--optimizer muon updates the matrices inside the backbone's blocks, but none of them is "
                        "trained here (a linear probe trains only the head; a model without blocks has none). Use "
                        "--optimizer adamw.")
    return muon, adamw


class _States(Mapping):
    """The per-parameter states of several optimizers as one read-only mapping. Not a ChainMap: looking a key up
    in the first of torch's defaultdict states would create an empty entry there for another optimizer's
    parameter, which that optimizer's ``state_dict`` then fails on."""

    def __init__(self, states: list):
        self.states = states

    def __getitem__(self, p):
        for s in self.states:
            if p in s:
                return s[p]
        raise KeyError(p)

    def __iter__(self):
        for s in self.states:
            yield from s

    def __len__(self) -> int:
        return sum(len(s) for s in self.states)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the trunk's matrices and AdamW for the rest, seen by the loop, the LR schedule and checkpoints as
    one optimizer.

    Muon's update is scaled to AdamW's RMS (``adjust_lr_fn="match_rms_adamw"``, Liu et al. 2025, "Muon is
    scalable"), so one learning rate and one schedule serve both halves. ``param_groups`` and ``state`` are live
    views of the two inner optimizers' own (``load_state_dict`` replaces theirs), so a scheduler's LR reaches them;
    the state dict holds both, under "muon" and "adamw".
    """

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8, fused: bool = False):
        self.muon = torch.optim.Muon(muon_groups, lr=lr, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, fused=fused) if adamw_groups \
            else None
        super().__init__(self.param_groups, {"lr": lr})

    def _inner(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self._inner() for g in o.param_groups]

    @param_groups.setter
    def param_groups(self, _):  # Optimizer.__init__ assigns a fresh list; the groups live in the inner optimizers
        pass

    @property
    def state(self) -> Mapping:
        return _States([o.state for o in self._inner()])

    @state.setter
    def state(self, _):
        pass

    def add_param_group(self, param_group: dict) -> None:
        # Optimizer.__init__ hands every inner group back to us; they are registered already.
        if not any(param_group is g for g in self.param_groups):
            raise UserError("MuonAdamW takes its parameters when it is built; build a new optimizer instead.")

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for o in self._inner():
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self._inner():
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise KeyError("the saved optimizer state is not Muon+AdamW's (keys 'muon' and 'adamw')")
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int, cooldown: float = 0.2):
    """Multiplier of the base LR at each step: linear warm-up, then linear decay to 0, cosine to 0, or constant.

    "slanted" is ULMFiT's slanted triangular schedule: a short linear rise over the warm-up steps (their
    ``cut_frac``), then a long linear decay, from and to 1/32 of the peak rather than to 0.
    "wsd" (warm-up, stable, decay; Hu et al. 2024, Hägele et al. 2024) holds the peak after warm-up and decays
    linearly to 0 over the last ``cooldown`` fraction of the steps: the stable phase does not depend on the run's
    length, so a run can be extended, or a checkpoint taken from the stable phase and cooled down on its own.
    """
    if schedule not in SCHEDULES:
        raise UserError(f"unknown --schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}.")
    total_steps = max(1, total_steps)
    decay_from = total_steps - max(1, round(cooldown * total_steps))

    def f(step: int) -> float:
        if schedule == "slanted":
            cut = max(1, warmup_steps)
            p = step / cut if step < cut else 1.0 - (step - cut) / max(1, total_steps - cut)
            return (1.0 + max(0.0, p) * (SLANTED_RATIO - 1)) / SLANTED_RATIO
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "wsd":
            return 1.0 if step < decay_from else max(0.0, (total_steps - step) / (total_steps - decay_from))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def warmup_steps_of(warmup: float, total_steps: int) -> int:
    """The warm-up setting in steps: below 1 a fraction of ``total_steps``, otherwise a number of steps."""
    return int(warmup * total_steps) if warmup < 1 else int(warmup)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup: float,
                    cooldown: float = 0.2):
    """A LambdaLR of ``lr_lambda``'s shape; ``warmup`` as ``warmup_steps_of`` reads it, ``cooldown`` is wsd's
    decaying fraction."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule, total_steps, warmup_steps_of(warmup, total_steps), cooldown))


def refit_scheduler(scheduler, schedule: str, total_steps: int, warmup: float, cooldown: float = 0.2) -> None:
    """Give ``scheduler`` (one from ``build_scheduler``) a new run length, keeping its position: a time-budgeted
    run learns its length from its speed (``training.budget``)."""
    shape = lr_lambda(schedule, total_steps, warmup_steps_of(warmup, total_steps), cooldown)
    scheduler.lr_lambdas = [shape] * len(scheduler.lr_lambdas)
    # the next step already runs at the new schedule's rate (LambdaLR would apply it one step later)
    rates = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports


def discriminative_param_groups(layer_groups: list[list[nn.Parameter]], lr: float, weight_decay: float,
                                factor: float = 2.6) -> list[dict]:
    """ULMFiT's discriminative learning rates: the top group (last in ``layer_groups``, bottom first) gets ``lr``,
    each group below it the LR of the group above divided by ``factor``.

    Frozen parameters are included on purpose: gradual unfreezing turns them on later, and AdamW skips a
    parameter whose ``grad`` is None, so a frozen one is neither updated nor decayed.

    Returns:
        optimizer parameter groups (decay / no-decay split per layer group), each with its own ``lr``.
    """
    groups = []
    top = len(layer_groups) - 1
    for depth, params in enumerate(layer_groups):
        group_lr = lr / factor ** (top - depth)
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr": group_lr},
                   {"params": no_decay, "weight_decay": 0.0, "lr": group_lr}]
    return [g for g in groups if g["params"]]
