"""Per-task evaluation of a multi-task module: every task scored on the examples its dev source labels, over the
present labels only, with the metrics of its kind.

Classification and regression tasks take the usual metrics (``evaluation.metrics``). A multilabel task is K binary
problems: each metric is computed per label over the examples labelled for it and averaged over the labels
(macro), so a rare label counts as much as a common one; ``roc_auc`` ranks the sigmoid probabilities.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.batches import in_order
from ..data.multitask import label_tensors
from ..errors import UserError
from .metrics import METRIC_TASK, METRICS, NEEDS_SCORES, compute_metrics, default_metrics

MULTILABEL_METRICS = ("accuracy", "roc_auc", "f1", "balanced_accuracy")


def default_task_metrics(kind: str, num_labels: int, modality: str = "text") -> list[str]:
    """The metrics a task of ``kind`` is scored with when none are named (the first is its headline)."""
    if kind == "multilabel":
        return ["roc_auc", "accuracy"]
    return default_metrics(kind, num_labels, modality)


def check_task_metrics(task: str, kind: str, metrics: list[str]) -> None:
    """Refuse a metric that cannot score a task of ``kind`` (Pearson on classes, F1 on a regression)."""
    fits = MULTILABEL_METRICS if kind == "multilabel" else [m for m in METRICS if METRIC_TASK[m] == kind]
    wrong = [m for m in metrics if m not in fits]
    if wrong:
        raise UserError(f"task '{task}' is {kind}: metric(s) {', '.join(wrong)} do not apply. Choose from "
                        f"{', '.join(fits)}.")


def score_task(kind: str, logits: torch.Tensor, labels: np.ndarray, present: np.ndarray,
               metrics: list[str]) -> dict[str, float]:
    """Metrics of one task on the present labels of a split (``labels`` / ``present`` as ``TaskLabels`` hold
    them, missing cells included)."""
    logits = logits.float()
    if kind == "multilabel":
        probs = torch.sigmoid(logits).numpy()
        out = {}
        for m in metrics:
            per_label = []
            for j in range(labels.shape[1]):
                rows = present[:, j]
                if not rows.any():
                    continue
                y = labels[rows, j].astype(np.int64)
                if m in NEEDS_SCORES:
                    per_label.append(METRICS[m](probs[rows, j], y))
                else:
                    per_label.append(METRICS[m]((probs[rows, j] > 0.5).astype(np.int64), y))
            values = np.asarray(per_label, dtype=np.float64)
            out[m] = float(np.nanmean(values)) if len(values) and not np.isnan(values).all() else float("nan")
        return out
    y = labels[present]
    logits = logits[torch.from_numpy(present)]
    if kind == "regression":
        return compute_metrics(metrics, logits.squeeze(-1).numpy(), y.astype(np.float64))
    return compute_metrics(metrics, logits.argmax(-1).numpy(), y.astype(np.int64), torch.softmax(logits, -1).numpy())


@torch.no_grad()
def task_logits(module, examples, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Every head's logits on ``examples`` (in order), task name -> (N, outputs)."""
    device = next(module.parameters()).device
    outs: dict[str, list] = {}
    for batch in in_order(examples, batch_size):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        for key, value in module(batch).items():
            if key.startswith("logits."):
                outs.setdefault(key[len("logits."):], []).append(value.float().cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


@torch.no_grad()
def evaluate_multitask(module, sources, examples, metrics: dict[str, list[str]], batch_size: int = 64) -> dict:
    """Per-task loss and metrics on dev sources: a flat dict with ``<task>/loss``, ``<task>/<metric>`` and
    ``loss`` (the sum of the task losses, as training computes it with equal weights).

    Args:
        sources: ``TaskSource``s; each task is scored on the source that carries it.
        examples: their batchable inputs (``inputs.examples``), in the same order.
        metrics: task name -> metric names (a task missing here gets its kind's defaults).
    """
    from ..tasks.multitask import task_loss

    out: dict[str, float] = {}
    total = 0.0
    for source, ex in zip(sources, examples):
        logits = task_logits(module, ex, batch_size)
        for name, labels in source.tasks.items():
            t = module.task(name)
            wanted = metrics.get(name) or default_task_metrics(t["kind"], t["num_labels"])
            tensors = label_tensors({name: labels}, np.arange(len(labels)))
            loss = float(task_loss(t["kind"], logits[name], tensors[f"labels.{name}"], tensors[f"present.{name}"]))
            out[f"{name}/loss"] = loss
            total += loss
            for m, v in score_task(t["kind"], logits[name], labels.values, labels.present, wanted).items():
                out[f"{name}/{m}"] = v
    out["loss"] = total
    return out
