"""Self-supervised learning from two augmented views of each image: SimCLR (Chen et al. 2020) and BYOL (Grill et al.
2020), on any image backbone.

The corruption is the augmentation: the batch source (``data.batches.ImageExamples`` with ``views=2``) gives
``views`` (2, B, C, H, W), each view of each image augmented with parameters drawn from the batch's seed, so a
resumed run sees the same views. Both modules pool the backbone's features (the mean over positions, what a
classification head reads and what transfers), then:

- **SimCLR** projects them with an MLP and pulls the two views of an image together against the 2(B - 1) other
  views of the batch (NT-Xent, a softmax cross-entropy over cosine similarities divided by a temperature). Its
  negatives come from the batch, so it needs a batch large enough to hold some (``SIMCLR_MIN_BATCH``). Under
  data parallelism each process contrasts within its own slice of the batch (no gather across processes), so the
  negatives are those of the per-process batch.
- **BYOL** has no negatives: an online network (backbone, projector, predictor) predicts the projection of the
  other view made by a *target* network, an exponential moving average of the online backbone and projector.
  The target gets no gradient; its momentum follows a cosine schedule from ``momentum`` to 1.0 over the run, and
  it is updated after every optimizer step by the callback the module supplies (``callbacks()``), so the training
  loop stays objective-agnostic.

Everything used only for pretraining sits under ``heads.`` (the projector; BYOL's predictor and the whole target
network), so a transfer keeps exactly the backbone and drops the rest.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..heads.heads import pool
from ..heads.projection import MLPHead
from .base import TaskModule

# Below this many images per (micro-)batch a contrastive loss has too few negatives to mean anything: SimCLR's
# accuracy falls steadily as the batch shrinks (Chen et al. 2020, figure 9, from 8192 down to 256), and with B
# images each view has only 2(B - 1) negatives. BYOL has no negatives, but its BatchNorms need two images.
SIMCLR_MIN_BATCH = 16
BYOL_MIN_BATCH = 2


def pooled_features(backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (N, C, H, W) -> the backbone's features averaged over positions (N, d): what transfers."""
    hidden, attention = backbone.features({"pixels": pixels})
    return pool(hidden, attention, "mean")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views' projections z1, z2 (B, D), averaged over all 2B views.

    Every view is a query whose positive is the other view of its image and whose negatives are the 2(B - 1)
    views of the other images: cross-entropy over the cosine similarities to every other view, over
    ``temperature``. Computed in fp32 (a bf16 softmax over the batch loses the small differences it learns from).
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)  # (2B, D)
    logits = z @ z.t() / temperature  # (2B, 2B)
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive or negative
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss, 2 - 2 cos(p, z) averaged over the batch: the squared distance of the normalised
    vectors. (N, D), (N, D) -> scalar."""
    return (2 - 2 * F.cosine_similarity(prediction.float(), target.float(), dim=-1)).mean()


def byol_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's target momentum after ``step`` of ``total_steps`` optimizer steps:
    ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``, from ``base`` at step 0 to exactly 1.0 at the end."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def check_views(batch: dict, objective: str) -> torch.Tensor:
    """The batch's ``views`` (2, B, C, H, W), or a UserError saying how to get them."""
    views = batch.get("views")
    if views is None or views.dim() != 5 or views.shape[0] != 2:
        got = "no 'views'" if views is None else f"views {tuple(views.shape)}"
        raise UserError(f"{objective} trains on two augmented views of each image, a batch key 'views' shaped "
                        f"(2, B, C, H, W); got {got}. Build the batches with ImageExamples(..., views=2) and an "
                        f"augmentation (the pretrain recipe does this).")
    return views


class TwoViewObjective(TaskModule):
    """What SimCLR and BYOL share: two views per image, counted once each (images/s are source images)."""

    perplexity_of = None
    views = 2
    min_batch = 1

    def count(self, batch: dict) -> int:
        return batch["views"].shape[1]

    def corruption(self):
        """Nothing besides the views: the augmentation is the corruption."""
        return None

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) -> the pooled features that transfer, (N, d)."""
        return pooled_features(self.backbone, pixels)


class SimCLR(TwoViewObjective):
    """Backbone + projector MLP, trained with NT-Xent. ``forward(batch)`` reads ``views`` (2, B, C, H, W)."""

    kind = "simclr"
    min_batch = SIMCLR_MIN_BATCH

    def __init__(self, backbone: nn.Module, temperature: float = 0.2, proj_hidden: int = 512, proj_dim: int = 128):
        super().__init__(backbone)
        if not temperature > 0:
            raise UserError(f"--temperature {temperature}: NT-Xent divides similarities by it, so it must be "
                            f"positive; SimCLR uses 0.1-0.5 (0.2 here by default).")
        self.temperature = float(temperature)
        self.heads["projector"] = MLPHead(backbone.config.d_model, proj_hidden, proj_dim)

    def task_config(self) -> dict:
        p = self.heads["projector"]
        return {"kind": self.kind, "temperature": self.temperature, "proj_hidden": p.fc1.out_features,
                "proj_dim": p.fc2.out_features}

    def forward(self, batch: dict) -> dict:
        views = check_views(batch, "SimCLR")
        n = views.shape[1]
        z = self.heads["projector"](self.embed(views.flatten(0, 1)))  # both views in one pass: (2B, D)
        loss = nt_xent(z[:n], z[n:], self.temperature)
        return {"loss": loss, "n_predictions": n}


class BYOL(TwoViewObjective):
    """Online backbone + projector + predictor, and a moving-average target (backbone + projector) under
    ``heads.target`` that gets no gradient. ``forward(batch)`` reads ``views`` (2, B, C, H, W)."""

    kind = "byol"
    min_batch = BYOL_MIN_BATCH

    def __init__(self, backbone: nn.Module, momentum: float = 0.99, proj_hidden: int = 1024, proj_dim: int = 256):
        super().__init__(backbone)
        check_momentum(momentum)
        self.momentum = float(momentum)
        self.heads["projector"] = MLPHead(backbone.config.d_model, proj_hidden, proj_dim)
        self.heads["predictor"] = MLPHead(proj_dim, proj_hidden, proj_dim)
        # The target starts as a copy of the online network (BYOL's initialisation) and never trains.
        target = nn.ModuleDict({"backbone": copy.deepcopy(backbone),
                                "projector": copy.deepcopy(self.heads["projector"])})
        target.requires_grad_(False)
        self.heads["target"] = target

    def task_config(self) -> dict:
        p = self.heads["projector"]
        return {"kind": self.kind, "momentum": self.momentum, "proj_hidden": p.fc1.out_features,
                "proj_dim": p.fc2.out_features}

    def train(self, mode: bool = True):
        """As ``TaskModule.train``, except that the target network follows ``mode`` although its weights are
        frozen: its BatchNorms normalise by the batch's statistics like the online network's (BYOL's reference
        implementation), instead of by running statistics that start at mean 0, variance 1."""
        super().train(mode)
        self.heads["target"].train(mode)
        return self

    def forward(self, batch: dict) -> dict:
        views = check_views(batch, "BYOL")
        n = views.shape[1]
        x = views.flatten(0, 1)  # (2B, C, H, W)
        online = self.heads["predictor"](self.heads["projector"](self.embed(x)))  # (2B, D)
        target_net = self.heads["target"]
        with torch.no_grad():
            target = target_net["projector"](pooled_features(target_net["backbone"], x))  # (2B, D)
        # each view's prediction regresses the target's projection of the other view, both ways
        loss = byol_loss(online[:n], target[n:]) + byol_loss(online[n:], target[:n])
        return {"loss": loss, "n_predictions": n}

    def online_and_target(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The online parameters (backbone, projector) and their target twins, in the same order."""
        target = self.heads["target"]
        online = [*self.backbone.parameters(), *self.heads["projector"].parameters()]
        twins = [*target["backbone"].parameters(), *target["projector"].parameters()]
        return online, twins

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for every parameter of the target."""
        online, target = self.online_and_target()
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1.0 - momentum)

    def callbacks(self) -> list:
        return [MomentumUpdate(self)]


def check_momentum(momentum: float) -> None:
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise UserError(f"--momentum {momentum}: BYOL's target momentum is a weight in [0, 1] (0 copies the online "
                        f"network every step, 1 never moves the target); BYOL uses 0.996, 0.99 suits short runs.")


class MomentumUpdate:
    """BYOL's target update after every optimizer step, with the cosine momentum schedule to 1.0. A step whose
    batch was skipped (NaN loss, ``--on-nan skip``) changed no weight, so the target does not move either.

    A training-loop callback (the four events of ``training.callbacks.Callback``, written out because objectives
    sit below training/ and do not import it)."""

    def __init__(self, module: BYOL):
        self.module = module

    def on_fit_start(self, state) -> None: ...
    def on_eval_end(self, state, metrics: dict) -> None: ...
    def on_fit_end(self, state) -> None: ...

    def on_step_end(self, state, logs: dict) -> None:
        if logs.get("fault"):
            return
        self.module.update_target(byol_momentum(state.step, state.max_steps, self.module.momentum))
