"""Classification and regression of a whole input (a sentence or pair, an image, a clip) on top of any backbone:
the backbone's features, pooled, into a head.

It is both the fine-tuning task (kinds "classification" and "regression", with a fresh head) and an objective:
supervised pretraining on a big labeled source ("supervised", MNIST standing in for ImageNet) trains exactly this
module, and transfer then drops its head like any pretraining head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..heads import ClassificationHead
from .base import TaskModule

TASKS = ("classification", "regression")


class SequenceClassifier(TaskModule):
    """Backbone + a fresh classification head. ``num_labels == 1`` with ``problem="regression"`` is STS-B style."""

    def __init__(self, backbone, num_labels: int, problem: str = "classification", pooling: str | None = None,
                 label_names: list[str] | None = None, kind: str | None = None):
        super().__init__(backbone)
        self.kind = kind or problem  # "supervised" for a pretraining run: its head is not carried by transfer
        self.problem = problem
        self.num_labels = 1 if problem == "regression" else num_labels
        self.label_names = label_names
        self.heads["classifier"] = ClassificationHead(backbone.config, self.num_labels, pooling)

    def task_config(self) -> dict:
        return {"kind": self.kind, "num_labels": self.num_labels, "label_names": self.label_names,
                "pooling": self.heads["classifier"].pooling}

    def forward(self, batch: dict) -> dict:
        # the head reads one position with "cls"/"last" pooling: the backbone may skip the rest of its last block
        hidden, attention = self.backbone.features_for(batch, self.heads["classifier"].pooling)
        logits = self.heads["classifier"](hidden, attention).float()
        out = {"logits": logits}
        if "labels" in batch:
            labels = batch["labels"]
            if self.problem == "regression":
                out["loss"] = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                out["loss"] = F.cross_entropy(logits, labels.long())
            out["labels"] = labels
            out["n_predictions"] = labels.shape[0]  # weighs ranks by their rows under DDP (uneven last batch)
        return out

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1) if self.problem == "regression" else logits.argmax(-1)
