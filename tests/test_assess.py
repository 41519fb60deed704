"""`transferlab assess`: LogME against a brute-force maximisation of the exact marginal likelihood, Kendall's τ
against scipy, and the command ranking tiny image checkpoints from frozen features in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats

from transferlab.cli import main
from transferlab.experiments.assess import evidence, kendall_tau, knn_predict, logme, logme_column


def _exact_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, I/β + F Fᵀ/α): the marginal likelihood of y = Fw + ε with w ~ N(0, I/α), ε ~ N(0, I/β)."""
    cov = np.eye(len(y)) / beta + f @ f.T / alpha
    return float(stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 5))
    y = f @ rng.normal(size=5) + 0.5 * rng.normal(size=40)
    return f, y


def test_evidence_is_the_exact_marginal_likelihood(problem):
    f, y = problem
    for alpha, beta in ((1.0, 1.0), (0.3, 4.0), (7.0, 0.2)):
        assert evidence(f, y, alpha, beta) == pytest.approx(_exact_log_evidence(f, y, alpha, beta), rel=1e-9)


def test_logme_fixed_point_finds_the_maximum_evidence(problem):
    f, y = problem
    value, alpha, beta = logme_column(f, y)
    # brute force: maximise the exact evidence over (log α, log β) from several starts
    best = min((optimize.minimize(lambda p: -_exact_log_evidence(f, y, np.exp(p[0]), np.exp(p[1])), start,
                                  method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
                for start in ([0.0, 0.0], [-3.0, 3.0], [3.0, -3.0])), key=lambda r: r.fun)
    assert value * len(y) == pytest.approx(-best.fun, abs=1e-5)
    assert np.log([alpha, beta]) == pytest.approx(best.x, abs=1e-3)
    # classification: the mean over classes of each one-hot column's LogME; an informative feature scores higher
    labels = (f[:, 0] > 0).astype(int)
    assert logme(f, labels) == pytest.approx(np.mean([logme_column(f, (labels == c).astype(float))[0]
                                                      for c in (0, 1)]))
    noise = np.random.default_rng(1).normal(size=f.shape)
    assert logme(f, labels) > logme(noise, labels)


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.integers(0, 4, 7).astype(float), rng.normal(size=7)
        if len(set(a)) > 1:
            assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_knn_votes_and_averages():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    dev = np.array([[1.0, 0.05], [0.1, 1.0]])
    assert knn_predict(train, np.array([0, 0, 1]), dev, "classification", k=1).tolist() == [0, 1]
    assert knn_predict(train, np.array([1.0, 3.0, 5.0]), dev, "regression", k=2).tolist() == [2.0, 4.0]


@pytest.fixture(scope="module")
def bars_ckpt(tmp_path_factory):
    """A bars image task and a resnet-tiny pretrained on it for a few steps."""
    from test_images_e2e import bars

    d = tmp_path_factory.mktemp("assess")
    arrays = {}
    for split, n, seed in (("train", 96, 0), ("val", 48, 1)):
        x, y = bars(n, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
    np.savez(d / "bars.npz", **arrays)
    assert main(["pretrain", "--objective", "supervised", "--data", str(d / "bars.npz"), "--model", "resnet-tiny",
                 "--steps", "8", "--batch-size", "16", "--lr", "3e-3", "--eval-batches", "1", "--out",
                 str(d / "sup"), "--quiet"]) == 0
    (d / "task.yaml").write_text(f"task:\n  train: {d / 'bars.npz'}\n  dev: {d / 'bars.npz'}\nmax_train: 64\n")
    return d


def test_assess_ranks_checkpoints_and_reports_tau(bars_ckpt, tmp_path, capsys):
    d = bars_ckpt
    (tmp_path / "tuned.json").write_text(json.dumps({"sup": 0.9, "scratch": 0.6}))
    assert main(["assess", "--task", str(d / "task.yaml"), "--checkpoints", str(d / "sup" / "final"),
                 f"scratch:{d / 'sup' / 'final'}", "--against", str(tmp_path / "tuned.json"),
                 "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "assess.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["sup", "scratch"]
    assert result["train_examples"] == 64 and result["dev_examples"] == 48
    for r in result["rows"]:
        assert np.isfinite(r["logme"]) and 0 <= r["knn"] <= 1 and 0 <= r["linear"] <= 1
        assert r["features_s"] > 0 and r["logme_s"] >= 0 and r["fine_tuned"] in (0.9, 0.6)
    assert set(result["tau"]) == {"logme", "knn", "linear"}
    assert "Kendall τ" in (tmp_path / "a" / "assess.md").read_text()
    assert "rank (LogME)" in capsys.readouterr().out


def test_assess_refuses_a_bad_task_spec(bars_ckpt, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"task:\n  train: {bars_ckpt / 'bars.npz'}\n  metric: pearson\n  dev: {bars_ckpt / 'bars.npz'}\n")
    assert main(["assess", "--task", str(spec), "--checkpoints", str(bars_ckpt / "sup" / "final")]) == 2
    assert "bad.yaml:3: task.metric" in capsys.readouterr().err
