"""GLUE metrics in plain numpy: accuracy, F1, Matthews correlation, Pearson and Spearman correlation.

Predictions are class ids for classification and floats for regression; inputs may be lists, numpy arrays or
torch tensors. Degenerate inputs give 0.0 rather than NaN (a constant prediction has no correlation with
anything), so a metric log never holds NaN unless the inputs do. The tests compare every metric with sklearn
and scipy, which are not needed at runtime.
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


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}
METRIC_TASK = {"accuracy": "classification", "f1": "classification", "mcc": "classification",
               "pearson": "regression", "spearman": "regression"}
HIGHER_IS_BETTER = set(METRICS)


def _check_names(names) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(repr(n) for n in unknown)}. Known metrics: "
                        f"{', '.join(METRICS)}.")
    return names


def compute_metrics(names, preds, labels) -> dict[str, float]:
    """Compute each named metric; a name not in ``METRICS`` is a ``UserError``."""
    names = _check_names(names)
    p, y = _pair(preds, labels)
    return {n: METRICS[n](p, y) for n in names}


def default_metrics(task: str, num_labels: int | None = None) -> list[str]:
    """GLUE's choice: accuracy (plus F1 for binary tasks) for classification, Pearson/Spearman for regression."""
    if task == "classification":
        return ["accuracy", "f1"] if num_labels == 2 else ["accuracy"]
    if task == "regression":
        return ["pearson", "spearman"]
    raise UserError(f"unknown task '{task}'. Use 'classification' or 'regression'.")


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
