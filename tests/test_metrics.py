"""Every metric against sklearn / scipy on seeded random inputs, plus ties and degenerate cases."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from transferlab.errors import UserError
from transferlab.evaluation.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    accuracy,
    check_metrics_fit_task,
    compute_metrics,
    default_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    spearman,
)


def _class_ids(seed, n, k):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    # Correlated predictions so the metrics are away from zero.
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))
    return preds, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_classification_metrics_match_sklearn(seed, k):
    preds, labels = _class_ids(seed, 200 + 37 * seed, k)
    assert accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds))
    average = "binary" if k == 2 else "macro"
    assert f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, average=average, zero_division=0))
    assert matthews_corrcoef(preds, labels) == pytest.approx(skm.matthews_corrcoef(labels, preds))


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 300)
    preds = labels + rng.normal(0, 1.5, 300)
    assert pearson(preds, labels) == pytest.approx(stats.pearsonr(preds, labels)[0])
    assert spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])


@pytest.mark.parametrize("seed", range(5))
def test_spearman_ties_use_average_ranks(seed):
    rng = np.random.default_rng(seed)
    # STS-B-like: scores on a 0.2 grid, so many ties on both sides.
    labels = rng.integers(0, 26, 150) / 5
    preds = np.round(labels + rng.normal(0, 1, 150))
    assert spearman(preds, labels) == pytest.approx(stats.spearmanr(preds, labels)[0])
    assert spearman([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(stats.spearmanr([1, 2, 2, 3], [1, 2, 3, 3])[0])


def test_accepts_lists_arrays_and_tensors():
    preds, labels = _class_ids(0, 100, 2)
    expected = accuracy(preds, labels)
    assert accuracy(preds.tolist(), labels.tolist()) == expected
    assert accuracy(torch.tensor(preds), torch.tensor(labels)) == expected
    assert accuracy(torch.tensor(preds).unsqueeze(1), labels) == expected
    y = torch.linspace(0, 1, 50, requires_grad=True)
    assert pearson(y * 2, y.detach().numpy()) == pytest.approx(1.0)
    assert isinstance(spearman(y, y), float)


def test_degenerate_inputs_give_zero_not_nan():
    assert pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == 0.0
    assert spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # constant predictions
    assert matthews_corrcoef([0, 0], [0, 0]) == 0.0
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positive class anywhere, as sklearn with zero_division=0
    assert f1([1, 1], [1, 1]) == 1.0
    assert accuracy([2], [2]) == 1.0
    assert matthews_corrcoef([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert all(-1.0 <= m(np.arange(7) % 3, np.arange(7) % 2) <= 1.0 for m in (pearson, spearman))


def test_nan_predictions_show_as_nan():
    assert np.isnan(pearson([0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]))
    assert np.isnan(spearman([0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]))


def test_f1_binary_vs_macro():
    # Labels within {0, 1}: F1 of class 1 only.
    assert f1([1, 0, 1, 0], [1, 1, 0, 0]) == pytest.approx(skm.f1_score([1, 1, 0, 0], [1, 0, 1, 0]))
    # A third class anywhere switches to macro over the classes seen.
    p, y = [0, 1, 2, 2], [0, 1, 1, 2]
    assert f1(p, y) == pytest.approx(skm.f1_score(y, p, average="macro"))


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="zero examples"):
        accuracy([], [])
    with pytest.raises(ValueError, match="argmax"):
        accuracy(np.zeros((4, 3)), np.zeros(4))


def test_compute_metrics_and_registry():
    preds, labels = _class_ids(1, 80, 2)
    out = compute_metrics(["accuracy", "f1", "mcc"], torch.tensor(preds), labels)
    assert out == {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels),
                   "mcc": matthews_corrcoef(preds, labels)}
    assert all(isinstance(v, float) for v in out.values())
    assert set(METRICS) == {"accuracy", "f1", "mcc", "balanced_accuracy", "roc_auc", "pearson", "spearman"} \
        == HIGHER_IS_BETTER
    with pytest.raises(UserError, match="Known metrics: accuracy, f1, mcc, balanced_accuracy, roc_auc, pearson, spearman"):
        compute_metrics(["accuracy", "auc"], preds, labels)


def test_default_metrics():
    assert default_metrics("classification", 2) == ["accuracy", "f1"]
    assert default_metrics("classification", 3) == ["accuracy"]
    assert default_metrics("classification") == ["accuracy"]
    assert default_metrics("regression") == ["pearson", "spearman"]
    with pytest.raises(UserError):
        default_metrics("ranking")


def test_check_metrics_fit_task():
    check_metrics_fit_task(["accuracy", "f1", "mcc"], "classification")
    check_metrics_fit_task(["pearson", "spearman"], "regression")
    with pytest.raises(UserError, match=r"'pearson'.*regression.*classification.*accuracy, f1, mcc"):
        check_metrics_fit_task(["accuracy", "pearson"], "classification")
    with pytest.raises(UserError, match=r"'accuracy'.*pearson, spearman"):
        check_metrics_fit_task(["accuracy"], "regression")
    with pytest.raises(UserError, match="Known metrics"):
        check_metrics_fit_task(["bleu"], "classification")
