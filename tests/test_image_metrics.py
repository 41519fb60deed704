"""Image metrics against sklearn (balanced accuracy, ROC AUC, per-class recall, the confusion matrix; ties and
degenerate cases), and the classical image reference they score: HOG features + logistic regression."""

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from transferlab.errors import UserError
from transferlab.evaluation.metrics import (
    METRIC_TASK,
    METRICS,
    NEEDS_SCORES,
    balanced_accuracy,
    check_metrics_fit_task,
    compute_metrics,
    confusion_matrix,
    default_image_metrics,
    default_metrics,
    recall_per_class,
    roc_auc,
)
from transferlab.experiments.classical import hog_features, hog_linear


def _task(seed, n, k, decimals=1):
    """Labels, class-probability rows that lean towards the label, rounded so many scores tie, and the argmax."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:
        probs = np.round(probs, decimals)
        probs /= probs.sum(1, keepdims=True)  # sklearn's multi-class AUC checks that rows sum to 1
    return probs.argmax(1), labels, probs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_match_sklearn(seed, k):
    preds, labels, probs = _task(seed, 150 + 31 * seed, k)
    assert balanced_accuracy(preds, labels) == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert confusion_matrix(preds, labels, k).tolist() == skm.confusion_matrix(labels, preds, labels=range(k)).tolist()
    assert recall_per_class(preds, labels, k) == pytest.approx(
        skm.recall_score(labels, preds, average=None, labels=range(k)).tolist())
    if k == 2:
        expected = skm.roc_auc_score(labels, probs[:, 1])
        assert roc_auc(probs[:, 1], labels) == pytest.approx(expected)
        assert roc_auc(probs, labels) == pytest.approx(expected)  # (N, 2): column 1 is the positive class
    else:
        expected = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        assert roc_auc(probs, labels) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=40))
def test_binary_auc_with_heavy_ties_matches_sklearn(pairs):
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    labels = np.array([int(b) for _, b in pairs])
    if labels.min() == labels.max():
        assert np.isnan(roc_auc(scores, labels))
        return
    auc = roc_auc(scores, labels)
    assert auc == pytest.approx(skm.roc_auc_score(labels, scores))
    assert roc_auc(-scores, labels) == pytest.approx(1 - auc)  # reversing the ranking mirrors the AUC


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_balanced_accuracy_and_recall_match_sklearn_on_any_labels(pairs):
    preds = np.array([p for p, _ in pairs])
    labels = np.array([y for _, y in pairs])
    with warnings.catch_warnings():  # sklearn warns when preds hold a class the labels lack, or recall is 0/0
        warnings.simplefilter("ignore")
        assert balanced_accuracy(preds, labels) == pytest.approx(skm.balanced_accuracy_score(labels, preds))
        expected = skm.recall_score(labels, preds, average=None, labels=range(4), zero_division=0)
    present = np.isin(np.arange(4), labels)
    recall = np.array(recall_per_class(preds, labels, 4))
    assert recall[present] == pytest.approx(expected[present])
    assert np.isnan(recall[~present]).all()  # no examples: undefined, not "never recognised"


def test_majority_class_predictor_is_exposed():
    labels = np.array([1] * 75 + [0] * 25)  # 3:1, as pneumonia to normal
    preds = np.ones(100, dtype=int)
    constant = np.full(100, 0.9)
    got = compute_metrics(default_image_metrics(2), preds, labels, scores=constant)
    assert got == {"accuracy": 0.75, "roc_auc": 0.5, "balanced_accuracy": 0.5}


def test_auc_undefined_is_nan_and_multiclass_skips_absent_classes():
    assert np.isnan(roc_auc([0.1, 0.8, 0.3], [1, 1, 1]))
    assert np.isnan(roc_auc(np.eye(3)[[0, 0, 1]] * 0.5 + 0.1, [2, 2, 2]))
    assert np.isnan(roc_auc([0.2, np.nan, 0.4], [0, 1, 1]))  # a diverged model shows as NaN
    # Class 0 never occurs: macro AUC over classes 1 and 2, each ranked perfectly.
    probs = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.3, 0.1, 0.6]])
    assert roc_auc(probs, [1, 1, 2, 2]) == 1.0
    assert roc_auc(torch.tensor(probs), torch.tensor([2, 2, 1, 1])) == 0.0


def test_scores_are_required_and_checked():
    preds, labels, probs = _task(0, 40, 3)
    with pytest.raises(ValueError, match="scores="):
        compute_metrics(["accuracy", "roc_auc"], preds, labels)
    got = compute_metrics(["accuracy", "roc_auc"], preds, labels, scores=probs)
    assert got["roc_auc"] == pytest.approx(roc_auc(probs, labels)) and got["accuracy"] == (preds == labels).mean()
    with pytest.raises(ValueError, match="shape"):
        roc_auc(probs[:10], labels)
    with pytest.raises(ValueError, match="outside 0..1"):
        roc_auc(probs[:, 0], labels)  # 1-D scores are for 0/1 labels
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(preds, np.where(labels == 2, 3, labels), 3)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0.5, 1.0], [0, 1], 2)


def test_registered_for_classification():
    assert {"roc_auc", "balanced_accuracy"} <= set(METRICS) and NEEDS_SCORES == {"roc_auc"}
    assert METRIC_TASK["roc_auc"] == METRIC_TASK["balanced_accuracy"] == "classification"
    check_metrics_fit_task(["roc_auc", "balanced_accuracy"], "classification")
    with pytest.raises(UserError, match="roc_auc"):
        check_metrics_fit_task(["roc_auc"], "regression")
    assert default_metrics("classification", 2) == ["accuracy", "f1"]  # text keeps GLUE's choice
    assert default_image_metrics(2) == default_image_metrics(10) == ["accuracy", "roc_auc", "balanced_accuracy"]


def test_confusion_matrix_keeps_unseen_classes():
    cm = confusion_matrix([0, 1, 1, 0], [0, 1, 0, 0], 4)
    assert cm.shape == (4, 4) and cm.dtype == np.int64
    assert cm[:2, :2].tolist() == [[2, 1], [0, 1]] and cm[2:].sum() == 0 and cm[:, 2:].sum() == 0


# ------------------------------------------------------------------------------------------------ HOG + linear


@dataclass
class _Images:
    """The two arrays of an image set (data/images.py's ImageSet), as the pipeline reads them."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    label_names: list = field(default_factory=lambda: ["horizontal", "vertical"])
    task: str = "classification"


def _bars(n, seed, size=28, channels=1):
    """Label 0: horizontal bars, label 1: vertical bars, at a random phase and period, under heavy noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    coords = np.arange(size)
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    for i, y in enumerate(labels):
        period, phase = rng.integers(4, 8), rng.integers(0, 8)
        stripes = ((coords + phase) % period < period // 2).astype(np.float64)
        pattern = np.broadcast_to(stripes[:, None] if y == 0 else stripes[None, :], (size, size))
        noisy = 60 + 120 * pattern[..., None] + rng.normal(0, 40, (size, size, channels))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return _Images(images, labels.astype(np.int64))


def test_hog_linear_separates_bars():
    train, dev, test = _bars(40, 0), _bars(30, 1), _bars(30, 2)
    got, n_trained = hog_linear(train, dev, default_image_metrics(2), test=test)
    assert got["accuracy"] == got["roc_auc"] == got["balanced_accuracy"] == 1.0
    assert got["test_accuracy"] == got["test_roc_auc"] == 1.0
    assert set(got) == {"loss", "accuracy", "roc_auc", "balanced_accuracy",
                        "test_loss", "test_accuracy", "test_roc_auc", "test_balanced_accuracy"}
    assert got["loss"] < 0.3 and n_trained == 6 * 6 * 2 * 2 * 9 + 1  # 28x28: 6x6 blocks of 2x2 cells, 9 bins
    only_dev, _ = hog_linear(train, dev, ["accuracy"], seed=1)
    assert set(only_dev) == {"loss", "accuracy"}


def test_hog_colour_uses_the_strongest_channel():
    gray = _bars(6, 3).images
    rgb = np.repeat(gray, 3, axis=-1)
    np.testing.assert_array_equal(hog_features(rgb), hog_features(gray))
    colour_train, colour_dev = _bars(40, 4, channels=3), _bars(20, 5, channels=3)
    assert hog_linear(colour_train, colour_dev, ["accuracy"])[0]["accuracy"] == 1.0


def test_hog_linear_mistakes_are_user_errors():
    train = _bars(10, 0)
    with pytest.raises(UserError, match=r"dev images are \(32, 32, 1\).*\(28, 28, 1\)"):
        hog_linear(train, _bars(4, 1, size=32), ["accuracy"])
    with pytest.raises(UserError, match="at least 8x8 pixels, got 6x6"):
        hog_features(_bars(2, 1, size=6).images)
    with pytest.raises(UserError, match="one class only"):
        hog_linear(_Images(train.images, np.zeros(10, dtype=np.int64)), train, ["accuracy"])
    regression = _Images(train.images, train.labels, task="regression")
    with pytest.raises(UserError, match="'regression'"):
        hog_linear(train, regression, ["accuracy"])


def test_tfidf_pipeline_reports_auc(labeled_files):
    from transferlab.data.labeled import read_labeled
    from transferlab.experiments.classical import tfidf_linear

    train, dev = (read_labeled(p) for p in labeled_files)
    got, _ = tfidf_linear(train, dev, ["accuracy", "roc_auc"])
    assert 0.5 < got["roc_auc"] <= 1.0


@pytest.mark.data
def test_hog_linear_beats_the_majority_class_on_pneumoniamnist():
    from conftest import SHARED_DATA

    from transferlab.data.sampling import stratified_sample

    path = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
    if not path.is_file():
        pytest.skip("needs ../shared/data/pneumoniamnist")
    d = np.load(path)

    def split(name, keep=None):
        images, labels = d[f"{name}_images"][..., None], d[f"{name}_labels"].reshape(-1).astype(np.int64)
        keep = slice(None) if keep is None else keep(labels)
        return _Images(images[keep], labels[keep], label_names=["normal", "pneumonia"])

    train = split("train", lambda y: stratified_sample(y, 500, seed=0))
    val = split("val")
    majority = np.bincount(val.labels).max() / len(val.labels)  # 389 / 524 = 0.742
    got, _ = hog_linear(train, val, default_image_metrics(2))
    assert got["accuracy"] > majority + 0.1 and got["roc_auc"] > 0.9 and got["balanced_accuracy"] > 0.8, got
