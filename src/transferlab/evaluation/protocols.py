"""The frozen-feature evaluation protocols of self-supervised learning: features of a backbone, kNN classification,
a logistic-regression linear probe, and the spread of the embeddings (collapse detection).

These read a backbone as it is (no training of it), so they work on any checkpoint — pretrained with any
objective, fine-tuned, or random — and on any labeled set of its modality: features are the backbone's hidden
states pooled as its classification head would pool them (``extract_features``).

kNN follows what solo-learn's ``WeightedKNNClassifier`` and lightly's ``knn_predict`` (after Wu et al. 2018's
instance discrimination) do: cosine similarity of L2-normalised features, the k = 20 nearest training examples,
each voting for its class with weight exp(similarity / T), T = 0.07; the class with the largest total wins. The
normalised votes are the class scores (for ROC AUC).

Collapse: a self-supervised objective without negatives can map every image to one point and still lower its loss.
``embedding_std`` is the standard deviation of the L2-normalised embeddings over a set, averaged over dimensions
(SimSiam's collapse monitor, Chen & He 2021): about 1/sqrt(d) when the embeddings spread over the sphere, ~0
when they have collapsed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import in_order
from ..errors import UserError
from ..heads.heads import pool
from .metrics import compute_metrics

KNN_K = 20
KNN_TEMPERATURE = 0.07
QUERY_CHUNK = 1024  # queries per similarity matrix: 1024 x a 60k-image bank is 240 MB of fp32


def _backbone(module):
    return getattr(module, "backbone", module)


@torch.no_grad()
def extract_features(module, examples, batch_size: int = 256, pooling: str | None = None) -> torch.Tensor:
    """The pooled features of every example, in order: (N, d) float32 on the CPU.

    Args:
        module: a task module (its ``backbone`` is used; heads are not) or a backbone.
        examples: batchable examples (``ImageExamples`` without views, ``EncodedExamples``).
        pooling: "mean", "cls" or "last"; default the backbone's own (``config.default_pooling``).
    """
    backbone = _backbone(module)
    how = pooling or backbone.config.default_pooling
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()  # BatchNorm by its running statistics, no dropout: the features the backbone would transfer
    try:
        out = []
        for batch in in_order(examples, batch_size):
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            hidden, attention = backbone.features(batch)
            out.append(pool(hidden, attention, how).float().cpu())
    finally:
        backbone.train(was_training)
    if not out:
        raise UserError("no examples to extract features from; the labeled set is empty.")
    return torch.cat(out)


def knn_scores(bank: torch.Tensor, bank_labels, queries: torch.Tensor, num_classes: int, k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE, exclude_self: bool = False) -> torch.Tensor:
    """Weighted kNN class scores of ``queries`` (Q, d) against a labeled ``bank`` (N, d): (Q, num_classes), each
    row summing to 1.

    Args:
        bank_labels: (N,) class ids.
        k: neighbours that vote (at most N; fewer bank examples than k means all of them vote).
        temperature: a neighbour's vote is exp(cosine similarity / temperature).
        exclude_self: the queries are the bank itself (leave-one-out): nobody votes for itself.
    """
    if not temperature > 0:
        raise UserError(f"kNN temperature {temperature} must be positive (0.07 is the common choice).")
    if k < 1:
        raise UserError(f"kNN k={k} must be at least 1 (20 is the common choice).")
    labels = torch.as_tensor(np.asarray(bank_labels), dtype=torch.long)
    bank = F.normalize(bank.float(), dim=-1)
    queries = F.normalize(queries.float(), dim=-1)
    k = min(k, len(bank) - (1 if exclude_self else 0))
    if k < 1:
        raise UserError("kNN needs at least two labeled examples for leave-one-out, one otherwise.")
    scores = []
    for start in range(0, len(queries), QUERY_CHUNK):
        with torch.autocast("cpu", enabled=False):  # fp32 even inside a bf16 evaluation: exp(sim / 0.07) needs it
            sim = queries[start:start + QUERY_CHUNK] @ bank.t()  # (q, N)
        if exclude_self:
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + start] = float("-inf")
        top, idx = sim.topk(k, dim=1)  # (q, k)
        weights = (top / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, labels[idx], weights)  # (q, C)
        scores.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(scores)


def knn_evaluate(bank: torch.Tensor, bank_labels, queries: torch.Tensor, query_labels, num_classes: int,
                 metrics: list[str] = ("accuracy",), k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                 exclude_self: bool = False) -> dict:
    """The named metrics (``evaluation.metrics``) of weighted kNN on labeled queries."""
    scores = knn_scores(bank, bank_labels, queries, num_classes, k, temperature, exclude_self)
    return compute_metrics(list(metrics), scores.argmax(1).numpy(), np.asarray(query_labels), scores.numpy())


def embedding_std(features: torch.Tensor) -> float:
    """The standard deviation over examples of the L2-normalised features, averaged over dimensions:
    ~1/sqrt(d) for embeddings spread over the sphere, ~0 for collapsed ones."""
    if len(features) < 2:
        return float("nan")
    return float(F.normalize(features.float(), dim=-1).std(0).mean())


def logistic_probe(train: torch.Tensor, train_labels, evaluated: dict[str, tuple[torch.Tensor, object]],
                   num_classes: int, metrics: list[str] = ("accuracy",), C: float = 1.0, seed: int = 0
                   ) -> dict[str, dict]:
    """Linear probe by logistic regression on frozen features (standardised with the training set's mean and
    std), scikit-learn's L-BFGS, as MedMNIST+'s linear-probe protocol.

    Args:
        train, train_labels: (N, d) features and their class ids.
        evaluated: name -> (features, labels) of each set to score (e.g. {"dev": ..., "test": ...}).
        C: inverse L2 regularisation strength.
    Returns:
        name -> {metric: value, "_predictions": the predicted class ids (N,)}.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(train_labels)
    if len(np.unique(y)) < 2:
        raise UserError("a linear probe needs training examples of at least two classes; this labeled subset "
                        "holds one. Use a larger budget (stratified sampling keeps every class).")
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit(((train - mean) / std).numpy(), y)
    out = {}
    for name, (feats, labels) in evaluated.items():
        x = ((feats - mean) / std).numpy()
        probs = np.zeros((len(x), num_classes))  # classes absent from training get probability 0
        probs[:, clf.classes_] = clf.predict_proba(x)
        preds = probs.argmax(1)
        out[name] = {**compute_metrics(list(metrics), preds, np.asarray(labels), probs), "_predictions": preds}
    return out
