"""How a multi-task module turns its per-task losses into the one loss the loop backpropagates: LibMTL's split
between the architecture (one backbone, a head per task) and the weighting, here small modules chosen by name.

- ``equal``: the sum of the task losses. Published comparisons (Xin et al. 2022, "Do current multi-task
  optimization methods in deep learning even help?"; Kurin et al. 2022, "In defense of the unitary
  scalarization") find that, with tuned training, the methods below rarely beat it: it is the baseline.
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): one learned log-variance s = log σ² per task; a regression loss
  L enters as exp(-s)·L/2 + s/2, a classification loss as exp(-s)·L + s/2 (their eqs. 7 and 10), so a noisy task
  weighs itself down and the s/2 term stops every weight from collapsing to zero.
- ``pcgrad`` (Yu et al. 2020, "Gradient surgery for multi-task learning"): each task's gradient on the shared
  (backbone) parameters is projected onto the normal plane of every other task's gradient it conflicts with
  (negative dot product), in a random order; the projected gradients are summed. The heads keep their own task's
  gradient. Because each projection only subtracts a multiple of another task's original gradient, the result is
  Σ_k w_k g_k with coefficients computed from the tasks' Gram matrix (``pcgrad_weights``); the module then returns
  a loss whose gradient is exactly that (see ``PCGrad.forward``), so the one loop's single ``backward`` applies
  it. Its cost: one extra backward pass through the backbone per task present in the batch.

Only the tasks with labels in the batch take part. The others contribute zero times their head's output, which
keeps every parameter in the graph (DDP reduces a gradient for every parameter at every step, even a step drawn
from a source that does not label every task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UserError

WEIGHTINGS = ("equal", "uncertainty", "pcgrad")
# A step draws its batch from one source, so PCGrad has something to project only where one source labels several tasks.
PCGRAD_ONE_TASK_PER_STEP = (
    "weighting 'pcgrad' projects the conflicting gradients of the tasks in a step, but every training source here "
    "labels one task and each step draws its batch from one source, so no step holds two tasks and pcgrad would "
    "train exactly as 'equal'. Use weighting 'equal' or 'uncertainty', or give the tasks one file with a label "
    "column each, so that every step holds them all.")


@dataclass
class LossContext:
    """What a gradient-based weighting needs besides the losses: the shared parameters, the losses again with the
    shared features detached (the heads' own gradient), and a seed for its random order (the batch's)."""

    shared: list[nn.Parameter]
    detached_losses: Callable[[], dict[str, torch.Tensor]]
    seed: int = 0


class Weighting(nn.Module):
    """Equal weights: the sum of the task losses."""

    name = "equal"

    def forward(self, losses: dict[str, torch.Tensor], present: dict[str, bool], ctx: LossContext | None = None):
        return sum(losses.values())

    def config(self) -> dict:
        return {"name": self.name}


def uncertainty_term(loss: torch.Tensor, log_var: torch.Tensor, kind: str) -> torch.Tensor:
    """Kendall et al.'s weighted loss of one task: exp(-s)·L/2 + s/2 for regression, exp(-s)·L + s/2 otherwise
    (s = log σ²). Minimised over s at s = log L (regression) or log 2L."""
    scale = 0.5 if kind == "regression" else 1.0
    return scale * torch.exp(-log_var) * loss + 0.5 * log_var


class Uncertainty(Weighting):
    name = "uncertainty"

    def __init__(self, kinds: dict[str, str], init: float = 0.0):
        super().__init__()
        self.kinds = dict(kinds)
        self.init = float(init)
        self.log_var = nn.ParameterDict({name: nn.Parameter(torch.tensor(self.init)) for name in kinds})

    def forward(self, losses, present, ctx=None):
        total = 0.0
        for name, loss in losses.items():
            s = self.log_var[name]
            # An absent task's s must not drift (its s/2 term alone would push it down forever): it only stays in
            # the graph, with a zero gradient.
            total = total + (uncertainty_term(loss, s, self.kinds[name]) if present[name] else loss + 0.0 * s)
        return total

    def weights(self) -> dict[str, float]:
        """The current weight of each task's loss, exp(-s) (halved for regression)."""
        return {n: float(torch.exp(-s.detach())) * (0.5 if self.kinds[n] == "regression" else 1.0)
                for n, s in self.log_var.items()}

    def config(self) -> dict:
        return {"name": self.name, "init": self.init}


def pcgrad_weights(gram: torch.Tensor, order: list[list[int]]) -> torch.Tensor:
    """PCGrad's sum Σ_i g_i^PC as coefficients of the original gradients g_k.

    Args:
        gram: (K, K) dot products g_i · g_j of the tasks' gradients.
        order: for each task i, the other tasks in the order its gradient is projected against them.
    Returns:
        (K,) w with Σ_i g_i^PC = Σ_k w_k g_k. Each g_i^PC starts as g_i; for each j in turn, if g_i^PC · g_j < 0
        it loses its component along g_j: g_i^PC -= (g_i^PC · g_j / |g_j|²) g_j.
    """
    k = gram.shape[0]
    gram = gram.double()
    coef = torch.eye(k, dtype=torch.float64)  # row i: g_i^PC in the basis of the original gradients
    for i in range(k):
        for j in order[i]:
            dot = coef[i] @ gram[:, j]
            if dot < 0:  # |g_j| > 0 here: a zero g_j has a zero dot product with everything
                coef[i, j] -= dot / gram[j, j]
    return coef.sum(0)


class PCGrad(Weighting):
    name = "pcgrad"

    def forward(self, losses, present, ctx: LossContext | None = None):
        active = [n for n in losses if present[n]]
        if len(active) < 2 or ctx is None or not torch.is_grad_enabled():
            return sum(losses.values())
        shared = [p for p in ctx.shared if p.requires_grad]
        flat = []
        for n in active:
            grads = torch.autograd.grad(losses[n], shared, retain_graph=True, allow_unused=True)
            flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                   for g, p in zip(grads, shared)]))
        g = torch.stack(flat)  # (K, P)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        order = [[j for j in torch.randperm(len(active), generator=gen).tolist() if j != i]
                 for i in range(len(active))]
        w = pcgrad_weights(g @ g.T, order).float()
        detached = ctx.detached_losses()
        total = 0.0
        for i, n in enumerate(active):
            # Gradient w_k·g_k into the backbone, and the head's own gradient unweighted: the detached copy
            # reaches the head parameters only, so the head sees w_k + (1 - w_k) = 1 times its task's gradient.
            total = total + w[i] * losses[n] + (1.0 - w[i]) * detached[n]
        return total + sum(losses[n] for n in losses if n not in active)


def build_weighting(config: str | dict | None, kinds: dict[str, str]) -> Weighting:
    """A weighting from its name or config dict (``{"name": "uncertainty", "init": 0.0}``) for tasks ``kinds``
    (task name -> kind)."""
    config = {"name": config} if isinstance(config, str) else dict(config or {"name": "equal"})
    name = config.pop("name", "equal")
    if name == "equal":
        return Weighting()
    if name == "uncertainty":
        return Uncertainty(kinds, **config)
    if name == "pcgrad":
        return PCGrad()
    raise UserError(f"unknown loss weighting '{name}'; choose one of {', '.join(WEIGHTINGS)}.")
