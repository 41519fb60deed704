"""Label budgets: a stratified, seeded subset of a labeled training set.

Each class keeps its share of the budget (largest-remainder rounding, every class present at least once), and the
examples of a class are taken from the front of one seeded permutation per class. The permutation depends on the
seed alone, not on the budget, so for one seed the 100-label subset lies inside the 300-label one (up to one
example per class that rounding can move): a data-efficiency curve then measures more labels, not other labels.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

REGRESSION_BINS = 5  # regression targets are stratified by quantile bins


def strata(labels, task: str = "classification") -> np.ndarray:
    """The stratum of every example: its class id, or its quantile bin for regression."""
    y = np.asarray(labels)
    if task != "regression":
        return y.astype(np.int64)
    edges = np.quantile(y.astype(np.float64), np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def allocate(counts: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over strata of sizes ``counts`` in proportion, summing exactly to ``budget``.

    Largest remainders get the leftover units (ties: the lower stratum id); a non-empty stratum gets at least
    one example whenever the budget allows it.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    quota = budget * counts / total
    take = np.floor(quota).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(quota[c] - take[c]), c))
    for c in order[:budget - int(take.sum())]:
        take[c] += 1
    present = np.flatnonzero(counts > 0)
    if budget >= len(present):
        for c in present[take[present] == 0]:
            donor = int(np.argmax(np.where(take > 1, take, -1)))
            take[donor] -= 1
            take[c] += 1
    return np.minimum(take, counts)


def stratified_sample(labels, budget: int, seed: int, task: str = "classification") -> np.ndarray:
    """Indices (sorted) of a ``budget``-sized subset that keeps the class proportions of ``labels``.

    Args:
        labels: class ids (or regression targets, stratified by quantile bins).
        budget: how many examples to keep; ``len(labels)`` keeps them all.
        seed: the same seed always gives the same subset, and nested subsets for growing budgets.
    Returns:
        an int64 array of indices into ``labels``.
    """
    s = strata(labels, task)
    n = len(s)
    if budget < 1 or budget > n:
        raise UserError(f"a label budget of {budget} does not fit a training set of {n} examples; use a budget "
                        f"between 1 and {n}, or 'all'.")
    if budget == n:
        return np.arange(n, dtype=np.int64)
    ids = np.unique(s)
    members = [np.flatnonzero(s == c) for c in ids]
    take = allocate(np.array([len(m) for m in members]), budget)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(m)[:k] for m, k in zip(members, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
