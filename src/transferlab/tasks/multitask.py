"""The multi-task module: one backbone, a head per task (MT-DNN's shape), a loss summed over the labels present.

Every head is the classification/regression head (``heads.ClassificationHead``) with as many outputs as its task
needs: classes (cross-entropy), 1 (regression, mean squared error) or K (multilabel, K independent binary
cross-entropies). A batch carries ``labels.<task>`` and ``present.<task>`` for the tasks its source labels
(``data.multitask``); a task's loss is the mean of its per-example (per-cell, for multilabel) losses over the
present labels only, so an example without a label for a task gives that head no gradient. The weighting
(``tasks.weighting``) combines the task losses into the one loss the loop backpropagates.

Checkpoints: weights ``backbone.*``, ``heads.<task>.*`` (and ``weighting.*`` for a learned weighting); config.json's
``task`` lists every task (name, kind, labels), so ``load_model`` rebuilds every head. Transfer drops every head,
or, with ``keep_heads``, carries the named ones over (``TaskModule.carried_heads``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..heads import ClassificationHead
from ..objectives.base import TaskModule
from .weighting import LossContext, build_weighting

MULTITASK = "multitask"
HEAD_KINDS = ("classification", "regression", "multilabel")


def check_tasks(tasks: list[dict]) -> list[dict]:
    """Task dicts (name, kind, num_labels, label_names) normalised and checked: unique names, known kinds, enough
    outputs."""
    out, seen = [], set()
    if not tasks:
        raise UserError("a multi-task model needs at least one task head.")
    for t in tasks:
        name, kind = str(t["name"]), t.get("kind", "classification")
        if name in seen:
            raise UserError(f"task '{name}' is named twice; every head needs its own name.")
        if not name or "." in name or "/" in name:
            raise UserError(f"task name '{name}' must be non-empty without '.' or '/' (it names the head's weights, "
                            f"heads.{name}.*, and its metrics, {name}/accuracy).")
        if kind not in HEAD_KINDS:
            raise UserError(f"task '{name}': unknown head kind '{kind}'; choose one of {', '.join(HEAD_KINDS)}.")
        names = t.get("label_names")
        n = 1 if kind == "regression" else int(t.get("num_labels") or (len(names) if names else 0))
        if kind == "classification" and n < 2:
            raise UserError(f"task '{name}' is classification with {n} class(es); it needs at least 2.")
        if kind == "multilabel" and n < 1:
            raise UserError(f"task '{name}' is multilabel with no labels; give num_labels or label_names.")
        seen.add(name)
        out.append({"name": name, "kind": kind, "num_labels": n,
                    "label_names": None if kind == "regression" else (list(names) if names else None)})
    return out


def task_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor, present: torch.Tensor,
              norm: torch.Tensor | float | None = None) -> torch.Tensor:
    """The sum of the per-example (multilabel: per-cell) losses over the present labels, divided by ``norm``
    (default: their number, i.e. the mean over present labels)."""
    if kind == "classification":
        each = F.cross_entropy(logits, labels.long(), reduction="none")
    elif kind == "regression":
        each = F.mse_loss(logits.squeeze(-1), labels.float(), reduction="none")
    else:
        each = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    mask = present.to(each.dtype)
    if norm is None:
        norm = mask.sum()
    # A rank whose slice holds none of a task's labels still adds 0 (times the head's output: it stays in the graph).
    return (each * mask).sum() / torch.clamp(torch.as_tensor(norm, dtype=each.dtype), min=1e-12)


class MultiTaskModule(TaskModule):
    """Backbone + one head per task + a loss weighting.

    Args:
        tasks: dicts with ``name``, ``kind`` (classification, regression, multilabel), ``num_labels`` and
            ``label_names``.
        pooling: how every head pools the backbone's features (None: the backbone's default).
        weighting: "equal", "uncertainty", "pcgrad", or a config dict (``tasks.weighting.build_weighting``).
        keep_heads: heads a transfer from a multi-task checkpoint carries over (same name, same shape).
    """

    kind = MULTITASK
    perplexity_of = None

    def __init__(self, backbone, tasks: list[dict], pooling: str | None = None, weighting=None,
                 keep_heads: tuple[str, ...] | list[str] = ()):
        super().__init__(backbone)
        self.tasks = check_tasks(tasks)
        names = [t["name"] for t in self.tasks]
        unknown = [h for h in keep_heads if h not in names]
        if unknown:
            raise UserError(f"keep_heads names {unknown}, which are not tasks of the new model ({', '.join(names)}); "
                            f"a kept head must belong to a task of the same name.")
        self.carried_heads = tuple(keep_heads)
        for t in self.tasks:
            self.heads[t["name"]] = ClassificationHead(backbone.config, t["num_labels"], pooling)
        self.pooling = self.heads[names[0]].pooling
        self.weighting = build_weighting(weighting, {t["name"]: t["kind"] for t in self.tasks})

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    def task(self, name: str) -> dict:
        for t in self.tasks:
            if t["name"] == name:
                return t
        raise UserError(f"no task '{name}' in this model; its tasks are {', '.join(self.task_names)}.")

    def task_config(self) -> dict:
        return {"kind": self.kind, "tasks": self.tasks, "pooling": self.pooling, "weighting": self.weighting.config()}

    @classmethod
    def from_config(cls, backbone, task: dict) -> "MultiTaskModule":
        return cls(backbone, task["tasks"], task.get("pooling"), task.get("weighting"), task.get("keep_heads", ()))

    def _losses(self, hidden, attention, batch: dict) -> tuple[dict, dict, dict]:
        losses, present, logits_out = {}, {}, {}
        for t in self.tasks:
            name = t["name"]
            logits = self.heads[name](hidden, attention).float()
            logits_out[name] = logits
            if f"labels.{name}" in batch:
                mask = batch[f"present.{name}"]
                norm = batch.get(f"norm.{name}")
                losses[name] = task_loss(t["kind"], logits, batch[f"labels.{name}"], mask, norm)
                # the global batch's count when the data source gives it (identical on every rank under DDP)
                present[name] = bool(norm > 0) if norm is not None else bool(mask.any())
            else:
                losses[name] = logits.sum() * 0.0
                present[name] = False
        return losses, present, logits_out

    def forward(self, batch: dict) -> dict:
        hidden, attention = self.backbone.features(batch)
        losses, present, logits = self._losses(hidden, attention, batch)
        out = {f"logits.{n}": v for n, v in logits.items()}
        if any(k.startswith("labels.") for k in batch):
            ctx = LossContext(list(self.backbone.parameters()),
                              lambda: self._losses(hidden.detach(), attention, batch)[0],
                              int(batch.get("step_seed", 0)))
            out["loss"] = self.weighting(losses, present, ctx)
            out.update({f"loss.{n}": v.detach() for n, v in losses.items() if present[n]})
        return out

    def predictions(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        """Class ids, regression values, or (N, K) 0/1 multilabel decisions at probability 0.5."""
        kind = self.task(name)["kind"]
        if kind == "regression":
            return logits.squeeze(-1)
        if kind == "multilabel":
            return (logits > 0).long()
        return logits.argmax(-1)
