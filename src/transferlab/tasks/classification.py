"""Sequence (and sentence-pair) classification and regression on top of any backbone."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import EncodedExamples
from ..heads import ClassificationHead
from ..objectives.base import TaskModule

TASKS = ("classification", "regression")


class SequenceClassifier(TaskModule):
    """Backbone + a fresh classification head. ``num_labels == 1`` with ``problem="regression"`` is STS-B style."""

    def __init__(self, backbone, num_labels: int, problem: str = "classification", pooling: str | None = None,
                 label_names: list[str] | None = None):
        super().__init__(backbone)
        self.kind = problem
        self.problem = problem
        self.num_labels = 1 if problem == "regression" else num_labels
        self.label_names = label_names
        self.heads["classifier"] = ClassificationHead(backbone.config, self.num_labels, pooling)

    def task_config(self) -> dict:
        return {"kind": self.problem, "num_labels": self.num_labels, "label_names": self.label_names,
                "pooling": self.heads["classifier"].pooling}

    def forward(self, batch: dict) -> dict:
        attention = batch.get("attention")
        hidden = self.backbone(batch["input_ids"], attention=attention, token_type_ids=batch.get("token_type_ids"))
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


def encode_texts(tokenizer, family: str, texts_a: list[str], texts_b: list[str] | None, max_len: int,
                 labels=None, problem: str = "classification", type_vocab_size: int = 2) -> EncodedExamples:
    """Tokenise once. Encoder: [CLS] a [SEP] b [SEP] with token types 0/1 (BERT; all 0 for a model with one
    token type, as RoBERTa). Decoder: a [SEP] b [EOS] (the classifier reads the last token, GPT-1 style). Pairs
    are truncated longest-first. Special ids come from the tokenizer (a converted BERT's [CLS] is 101)."""
    ids_a = tokenizer.encode_batch(list(texts_a))
    ids_b = tokenizer.encode_batch(list(texts_b)) if texts_b is not None else [None] * len(ids_a)
    if family == "encoder":
        first, middle, last = [tokenizer.cls_id], [tokenizer.sep_id], [tokenizer.sep_id]
    else:
        first, middle, last = [], [tokenizer.sep_id], [tokenizer.eos_id]
    input_ids, token_types = [], []
    for a, b in zip(ids_a, ids_b):
        budget = max_len - len(first) - len(last) - (len(middle) if b is not None else 0)
        a, b = _truncate(a, b, budget)
        seq = first + a + (middle + b if b is not None else []) + last
        n_a = len(first) + len(a) + (len(middle) if b is not None else len(last))
        input_ids.append(seq)
        token_types.append([0] * n_a + [int(type_vocab_size > 1)] * (len(seq) - n_a))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32 if problem == "regression" else np.int64)
    return EncodedExamples(input_ids, token_types, labels, tokenizer.pad_id)


def _truncate(a: list[int], b: list[int] | None, budget: int):
    """Longest-first truncation (BERT's rule: drop a token from the longer side, ``a`` on ties) in closed form."""
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return a, b
    if 2 * min(len(a), len(b)) <= budget:  # the shorter side survives whole
        return (a[:budget - len(b)], b) if len(a) > len(b) else (a, b[:budget - len(a)])
    return a[:budget // 2], b[:budget - budget // 2]
