"""Metrics in plain numpy: GLUE's (accuracy, F1, Matthews correlation, Pearson and Spearman correlation), and for
images and imbalanced binary tasks (medical ones: 3 pneumonia X-rays to 1 normal) balanced accuracy and ROC AUC,
with per-class recall and the confusion matrix for reports.

Predictions are class ids for classification and floats for regression; inputs may be lists, numpy arrays or
torch tensors. ROC AUC ranks class scores, not class ids: ``compute_metrics`` takes them as ``scores`` and the
metrics that need them are in ``NEEDS_SCORES``. Degenerate inputs give 0.0 rather than NaN (a constant prediction
has no correlation with anything), with one exception: AUC is NaN when the labels hold a single class. AUC compares
positives with negatives, so with one side missing there is no number to report, and 0.5 or 0.0 would read as a
measured chance-level or worst-possible model; a report shows NaN as "undefined" (sklearn raises instead). The
tests compare every metric with sklearn and scipy, which are not needed at runtime.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import UserError


def _as_array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim > 1 and a.size == a.shape[0]:  # (N, 1) -> (N,)
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}; for classification pass class "
                         f"ids (the argmax of the logits), not the logits")
    return a


def _pair(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = _as_array(preds, "preds"), _as_array(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {len(p)} vs {len(y)}")
    if len(p) == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def _confusion(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Confusion matrix over the union of classes seen: rows are true classes, columns predicted."""
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = len(classes), len(y)
    return np.bincount(inv[:n] * k + inv[n:], minlength=k * k).reshape(k, k), classes


def accuracy(preds, labels) -> float:
    """Fraction of predictions equal to the label."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1(preds, labels) -> float:
    """F1 of class 1 when the classes seen are within {0, 1}; otherwise macro-F1 over the classes seen.

    A class that is neither predicted nor present scores 0 (as sklearn does with ``zero_division=0``).
    """
    p, y = _pair(preds, labels)
    cm, classes = _confusion(p, y)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if set(classes.tolist()) <= {0, 1}:
        pos = np.flatnonzero(classes == 1)
        return float(per_class[pos[0]]) if len(pos) else 0.0
    return float(per_class.mean())


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation, generalised to K classes (Gorodkin 2004); 0.0 when undefined."""
    p, y = _pair(preds, labels)
    cm, _ = _confusion(p, y)
    cm = cm.astype(np.float64)  # the products below overflow int64 for large N
    t, q = cm.sum(axis=1), cm.sum(axis=0)  # true and predicted counts per class
    c, s = np.trace(cm), cm.sum()
    cov_yp = c * s - t @ q
    cov_pp = s * s - q @ q
    cov_yy = s * s - t @ t
    denom = np.sqrt(cov_pp * cov_yy)
    return float(cov_yp / denom) if denom > 0 else 0.0


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64) - x.mean(dtype=np.float64)
    y = y.astype(np.float64) - y.mean(dtype=np.float64)
    denom = np.sqrt((x @ x) * (y @ y))
    if denom == 0:
        return 0.0
    # Rounding can push |r| a hair past 1.
    return float(np.clip((x @ y) / denom, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (scipy's ``rankdata`` default)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.concatenate([[True], xs[1:] != xs[:-1]])
    group = np.cumsum(new_group) - 1
    starts = np.concatenate([np.flatnonzero(new_group), [len(x)]])
    mean_rank = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def balanced_accuracy(preds, labels) -> float:
    """Mean recall over the classes present in ``labels`` (sklearn's ``balanced_accuracy_score``).

    Unlike accuracy it does not reward predicting the majority class: that scores 1 / (number of classes).
    """
    p, y = _pair(preds, labels)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    hits = np.bincount(inv.reshape(-1), weights=(p == y).astype(np.float64), minlength=len(classes))
    return float(np.mean(hits / counts))


def _class_ids(x, name: str, num_classes: int) -> np.ndarray:
    a = _as_array(x, name)
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise ValueError(f"{name} must be class ids (integers), got fractional values such as "
                             f"{a[a != np.round(a)][0]}")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{name} must be class ids (integers), got dtype {a.dtype}")
    a = a.astype(np.int64)
    if len(a) and (a.min() < 0 or a.max() >= num_classes):
        bad = a[(a < 0) | (a >= num_classes)][0]
        raise ValueError(f"{name} holds class id {bad}, outside 0..{num_classes - 1} for {num_classes} classes")
    return a


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        preds, labels: class ids in ``0 .. num_classes - 1``.
        num_classes: K, so a class that never occurs still has its row and column.
    Returns:
        (K, K) int64 array; rows are true classes, columns predicted ones.
    """
    p, y = _pair(_class_ids(preds, "preds", num_classes), _class_ids(labels, "labels", num_classes))
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def recall_per_class(preds, labels, num_classes: int) -> list[float]:
    """Recall of every class ``0 .. num_classes - 1``: the fraction of its examples predicted as it.

    Returns:
        K floats; NaN for a class with no examples in ``labels`` (its recall is undefined; sklearn reports 0.0 with a
        warning, which would read as "never recognised").
    """
    cm = confusion_matrix(preds, labels, num_classes).astype(np.float64)
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.full(num_classes, np.nan), where=support > 0)
    return recall.tolist()


def _scores_array(scores, n: int) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim not in (1, 2) or len(s) != n:
        raise ValueError(f"scores must be (N, K) class probabilities or (N,) positive-class probabilities for the "
                         f"N={n} labels, got shape {s.shape}")
    return s


def _binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney form: the chance that a random positive outranks a random negative, ties counting a half."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve, from scores (not class ids).

    Args:
        scores: (N,) the positive class's probability (any monotone score works), or (N, K) class scores. With
            K = 2 the binary AUC of column 1; with K > 2 the macro average of one-vs-rest AUCs over the classes
            present in ``labels`` (sklearn's ``multi_class="ovr"``, which requires every class to be present).
        labels: class ids; 0/1 for 1-D scores.
    Returns:
        the AUC in [0, 1]; NaN when ``labels`` hold one class only, or ``scores`` hold NaN (a diverged model).
    """
    y = _as_array(labels, "labels")
    s = _scores_array(scores, len(y))
    if len(y) == 0:
        raise ValueError("cannot compute a metric on zero examples")
    k = 2 if s.ndim == 1 else s.shape[1]
    y = _class_ids(y, "labels", k)
    if np.isnan(s).any():
        return float("nan")
    if k == 2:
        return _binary_auc(s if s.ndim == 1 else s[:, 1], y == 1)
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([_binary_auc(s[:, c], y == c) for c in present]))


def pearson(preds, labels) -> float:
    """Pearson correlation; 0.0 when either side is constant."""
    p, y = _pair(preds, labels)
    return _corr(p, y)


def spearman(preds, labels) -> float:
    """Spearman rank correlation with average ranks for ties; 0.0 when either side is constant."""
    p, y = _pair(preds, labels)
    if np.isnan(p.astype(np.float64)).any() or np.isnan(y.astype(np.float64)).any():
        return float("nan")  # a diverged model should show up as NaN, not as a rank of NaN
    return _corr(_average_ranks(p), _average_ranks(y))


# Each takes (preds, labels), except those in NEEDS_SCORES, which take (scores, labels).
METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "balanced_accuracy": balanced_accuracy,
    "roc_auc": roc_auc,
    "pearson": pearson,
    "spearman": spearman,
}
METRIC_TASK = {"accuracy": "classification", "f1": "classification", "mcc": "classification",
               "balanced_accuracy": "classification", "roc_auc": "classification",
               "pearson": "regression", "spearman": "regression"}
NEEDS_SCORES = {"roc_auc"}
HIGHER_IS_BETTER = set(METRICS)


def _check_names(names) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(repr(n) for n in unknown)}. Known metrics: "
                        f"{', '.join(METRICS)}.")
    return names


def compute_metrics(names, preds, labels, scores=None) -> dict[str, float]:
    """Compute each named metric.

    Args:
        names: metric names; one not in ``METRICS`` is a ``UserError``.
        preds, labels: class ids (or floats for regression).
        scores: (N, K) class probabilities, or (N,) positive-class probabilities for a binary task; needed by the
            metrics in ``NEEDS_SCORES`` (a ``ValueError`` without them).
    Returns:
        name -> value.
    """
    names = _check_names(names)
    p, y = _pair(preds, labels)
    need = [n for n in names if n in NEEDS_SCORES]
    if need and scores is None:
        raise ValueError(f"metric(s) {', '.join(need)} rank class scores, not class ids: pass scores= (N, K) class "
                         f"probabilities (the softmax of the logits), or (N,) positive-class probabilities")
    return {n: METRICS[n](scores if n in NEEDS_SCORES else p, y) for n in names}


def default_metrics(task: str, num_labels: int | None = None, modality: str = "text") -> list[str]:
    """GLUE's choice for text: accuracy (plus F1 for binary tasks) for classification, Pearson/Spearman for
    regression; for images ``default_image_metrics``."""
    if modality == "image" and task == "classification":
        return default_image_metrics(num_labels or 2)
    if task == "classification":
        return ["accuracy", "f1"] if num_labels == 2 else ["accuracy"]
    if task == "regression":
        return ["pearson", "spearman"]
    raise UserError(f"unknown task '{task}'. Use 'classification' or 'regression'.")


def default_image_metrics(num_labels: int) -> list[str]:
    """Accuracy, ROC AUC and balanced accuracy, binary or not: image tasks (medical ones above all) are often
    imbalanced, where accuracy alone rewards predicting the majority class and AUC does not depend on a threshold."""
    if num_labels < 2:
        raise UserError(f"an image classification task needs at least 2 classes, got {num_labels}.")
    return ["accuracy", "roc_auc", "balanced_accuracy"]


def check_metrics_fit_task(names, task: str) -> None:
    """Raise a ``UserError`` if a metric cannot be computed for ``task`` (e.g. Pearson on class ids)."""
    names = _check_names(names)
    if task not in ("classification", "regression"):
        raise UserError(f"unknown task '{task}'. Use 'classification' or 'regression'.")
    wrong = [n for n in names if METRIC_TASK[n] != task]
    if wrong:
        fits = ", ".join(n for n in METRICS if METRIC_TASK[n] == task)
        other = "regression" if task == "classification" else "classification"
        raise UserError(f"metric(s) {', '.join(repr(n) for n in wrong)} apply to {other}, but this task is "
                        f"{task}. Choose metrics from: {fits}.")


# Why a metric can come out as NaN even from a sound model (a reader must not take NaN for a score).
_UNDEFINED = {
    "roc_auc": "roc_auc is undefined when the evaluated data holds one class only (there is nothing to rank)",
    "pearson": "pearson is undefined when the predictions or the targets are all equal",
    "spearman": "spearman is undefined when the predictions or the targets are all equal",
    "mcc": "mcc is undefined when the predictions or the labels are all one class",
}


def why_not_finite(metrics: dict) -> str:
    """One sentence per metric that is NaN or infinite, saying why it can be (for the CLI's refusal)."""
    import math

    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    reasons = [_UNDEFINED.get(k, f"{k} is not a number") for k in bad]
    if "loss" in bad:
        reasons = [r for r in reasons if not r.startswith("loss")] + [
            "the loss is not finite: the model's scores are NaN or infinite (weights broken by a run that diverged?)"]
    return "; ".join(reasons) + "."
