"""`transferlab assess --task SPEC --checkpoints A B C`: which checkpoint should I transfer from? Rank candidates
for a labeled task from their frozen features, without fine-tuning any of them.

Each checkpoint's backbone reads the task's training examples (up to ``max_train``, a seeded stratified sample)
and its dev examples once; the pooled features (what a new head would read) are then scored three ways, each
timed:

- **LogME** (You et al. 2021, "LogME: practical assessment of pre-trained models for transfer learning"): the
  log marginal likelihood (evidence), per example, of a Bayesian linear model from the features to the labels,
  with its prior precision α and noise precision β set to the values that maximise it. Classification scores each
  class's one-hot column and averages. It needs no dev split and no training: a larger evidence means the labels
  are closer to a linear function of the features. The fixed-point iteration for α, β (MacKay's) is a few lines on
  the features' singular values (``logme``).
- **kNN**: cosine k-nearest-neighbour vote (mean, for regression) of the dev examples among the training ones;
- **linear probe**: logistic (ridge, for regression) regression on standardised features, scored on dev.

With ``against`` (a compare grid's results.jsonl, or a JSON {name: score}), the report adds the fine-tuned score of
each checkpoint and the Kendall τ between each ranking and the fine-tuned one: how far the cheap ranking can be
trusted on this task. A candidate ``scratch:DIR`` is DIR's architecture with random weights (compare's scratch).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..evaluation.metrics import compute_metrics, default_metrics
from ..fsutil import write_text
from .report import markdown_table
from .spec import SpecReader, read_spec

TASK_KEYS = ("train", "dev", "test", "text_cols", "label_col", "task", "metric", "metrics", "image_size", "path_col")
# A compare spec works as an assess spec (its task: is read, the rest ignored).
TOP_KEYS = ("task", "max_train", "name", "checkpoints", "methods", "budgets", "seeds", "train", "out")
SCORES = ("logme", "knn", "linear")
KNN_K = 10


# ------------------------------------------------------------------------------------------------ LogME


def _evidence_terms(sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int, alpha: float, beta: float):
    """(evidence, γ, |m|², |Fm - y|²) of the Bayesian linear model at (α, β), from the eigenvalues ``sigma`` of
    FᵀF (nonzero part), the squared projections ``z2`` of y on F's left singular vectors, and ``rest`` = the part
    of |y|² outside F's column space."""
    denom = alpha + beta * sigma
    gamma = float(np.sum(beta * sigma / denom))
    m2 = float(np.sum(beta ** 2 * sigma * z2 / denom ** 2))
    res2 = float(np.sum((alpha / denom) ** 2 * z2) + rest)
    logdet = float(np.sum(np.log(denom)) + (d - len(sigma)) * math.log(alpha))
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
    return evidence, gamma, m2, res2


def evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence log p(y | F, α, β) of y = F w + ε, w ~ N(0, I/α), ε ~ N(0, I/β) (not divided by n)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    z = u.T @ y
    return _evidence_terms(s ** 2, z ** 2, float(y @ y - z @ z), len(y), f.shape[1], alpha, beta)[0]


def logme_column(features: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5,
                 svd=None) -> tuple[float, float, float]:
    """LogME of one target column: (max over α, β of the evidence / n, α, β), by the fixed-point updates
    α = γ / |m|², β = (n − γ) / |Fm − y|² (γ: the effective number of parameters)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = f.shape
    u, s = svd if svd is not None else np.linalg.svd(f, full_matrices=False)[:2]
    sigma = s ** 2
    z = u.T @ y
    z2, rest = z ** 2, max(float(y @ y - z @ z), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        _, gamma, m2, res2 = _evidence_terms(sigma, z2, rest, n, d, alpha, beta)
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (n - gamma) / max(res2, 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence_terms(sigma, z2, rest, n, d, alpha, beta)[0] / n, alpha, beta


def logme(features: np.ndarray, labels: np.ndarray, task: str = "classification") -> float:
    """LogME of features for labels: the mean over classes of each one-hot column's LogME (classification), or
    the target's (regression). Higher is better; comparable across checkpoints on the same task."""
    f = np.asarray(features, dtype=np.float64)
    u, s = np.linalg.svd(f, full_matrices=False)[:2]
    if task == "regression":
        y = np.asarray(labels, dtype=np.float64)
        return logme_column(f, y, svd=(u, s))[0]
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.unique(labels)
    return float(np.mean([logme_column(f, (labels == c).astype(np.float64), svd=(u, s))[0] for c in classes]))


# ------------------------------------------------------------------------------------------------ kNN, probe, τ


def knn_predict(train_f: np.ndarray, train_y: np.ndarray, dev_f: np.ndarray, task: str, k: int = KNN_K):
    """Cosine k-nearest neighbours: the majority class (ties: the lowest id) or the mean target."""
    a = train_f / np.maximum(np.linalg.norm(train_f, axis=1, keepdims=True), 1e-12)
    b = dev_f / np.maximum(np.linalg.norm(dev_f, axis=1, keepdims=True), 1e-12)
    k = min(k, len(a))
    nearest = np.argsort(-(b @ a.T), axis=1, kind="stable")[:, :k]
    votes = np.asarray(train_y)[nearest]
    if task == "regression":
        return votes.mean(axis=1)
    return np.array([np.bincount(v).argmax() for v in votes.astype(np.int64)])


def linear_probe_predict(train_f, train_y, dev_f, task: str, seed: int = 0):
    """Standardised features -> logistic regression (C=1) or ridge (alpha=1): (predictions, class scores or None)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "regression":
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(train_f, train_y)
        return model.predict(dev_f), None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(train_f, train_y)
    probs = np.zeros((len(dev_f), int(np.max(train_y)) + 1))
    probs[:, model.classes_] = model.predict_proba(dev_f)
    return probs.argmax(1), probs


def kendall_tau(a, b) -> float:
    """Kendall's τ-b between two score lists (ties handled as scipy's ``kendalltau``); NaN for fewer than two
    items or a constant list."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom > 0 else float("nan")


# ------------------------------------------------------------------------------------------------ the task


@dataclass
class AssessTask(SpecReader):
    """The task of an assess spec (a compare spec's ``task:`` works too)."""

    source: str
    task: dict
    lines: dict
    max_train: int = 2000

    @classmethod
    def parse(cls, spec: str | Path | dict) -> "AssessTask":
        data, lines, source = read_spec(spec, ("task", "max_train"),
                                        "examples/compare_pneumonia.yaml: a compare spec works")
        self = cls(source, {}, lines)
        self._check_keys(data, (), TOP_KEYS)
        task = data.get("task")
        if not task:
            raise self.error(("task",), "missing: add `task:` with `train:` and `dev:` (labeled files, a GLUE "
                                        "directory or an image source).")
        self._check_keys(task, ("task",), TASK_KEYS)
        for key in ("train", "dev"):
            if not task.get(key):
                raise self.error(("task", key), f"missing: name the {key} split.")
        kind = task.get("task")
        if kind not in (None, "classification", "regression"):
            raise self.error(("task", "task"), f"'{kind}' is not a task; use classification or regression.")
        n = data.get("max_train", 2000)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise self.error(("max_train",), f"'{n}' is not a number of training examples (at least 2).")
        self.task, self.max_train = dict(task), n
        return self

    def read(self, modality: str):
        """(train, dev) of the task, read the way ``modality`` reads."""
        t = self.task
        try:
            if modality == "image":
                from ..data.images import read_images

                size = t.get("image_size")
                size = (size, size) if isinstance(size, int) else tuple(size) if size else None
                train = read_images(t["train"], "train", resize=size, label_col=t.get("label_col"),
                                    path_col=t.get("path_col"))
                dev = read_images(t["dev"], "dev", label_names=train.label_names, resize=size,
                                  label_col=t.get("label_col"), path_col=t.get("path_col"))
            else:
                from ..data.labeled import find_split, read_labeled

                cols = t.get("text_cols")
                train = read_labeled(find_split(t["train"], "train"), text_cols=cols, label_col=t.get("label_col"),
                                     task=t.get("task"))
                dev = read_labeled(find_split(t["dev"], "dev"), text_cols=cols, label_col=t.get("label_col"),
                                   task=train.task, label_names=train.label_names)
        except UserError as e:
            raise self.error(("task",), str(e)) from None
        metric = t.get("metric") or default_metrics(train.task, train.num_labels, modality)[0]
        from ..evaluation.metrics import METRIC_TASK

        if METRIC_TASK.get(metric) != train.task:
            raise self.error(("task", "metric"), f"'{metric}' does not score a {train.task} task.")
        self.task["metric"] = metric
        return train, dev


# ------------------------------------------------------------------------------------------------ features


def _candidate(entry: str) -> tuple[str, str, str]:
    """"[NAME=][scratch:]DIR" -> (name, directory, init)."""
    name, _, rest = entry.rpartition("=") if "=" in entry else ("", "", entry)
    init = "pretrained"
    if rest.startswith("scratch:"):
        rest, init = rest[len("scratch:"):], "scratch"
    directory = Path(rest)
    if not name:
        name = directory.parent.name if directory.name == "final" else directory.name
        name = "scratch" if init == "scratch" else name
    return name, str(directory), init


@torch.no_grad()
def features(directory: str, init: str, datasets: list, max_len: int = 128, batch_size: int = 128, seed: int = 0
             ) -> list[np.ndarray]:
    """(N, C) pooled backbone features of each of ``datasets`` (labeled sets of the checkpoint's modality): the
    vectors a new classification head reads (before a text head's own dense layer)."""
    from ..data.batches import in_order
    from ..heads.heads import pool
    from ..tasks.factory import image_adaptation
    from ..transfer import from_pretrained

    model = from_pretrained(directory, num_labels=2, init=init, seed=seed, verbose=False, dropout=None,
                            max_len=max_len, **image_adaptation(directory, datasets[0]))
    backbone = model.module.backbone.eval()
    result = []
    for data in datasets:
        out = []
        for batch in in_order(model.inputs.examples(data, backbone.config, model.max_len), batch_size):
            hidden, attention = backbone.features({k: v for k, v in batch.items() if k != "labels"})
            out.append(pool(hidden.float(), attention, backbone.config.default_pooling).numpy())
        result.append(np.concatenate(out).astype(np.float64))
    return result


def _subsample(data, n: int, seed: int = 0):
    if len(data) <= n:
        return data
    from ..data.sampling import stratified_sample

    return data.subset(stratified_sample(data.labels, n, seed, data.task))


def score_checkpoint(directory: str, init: str, train, dev, metric: str, max_len: int = 128) -> dict:
    """LogME, kNN and linear-probe scores of one checkpoint's frozen features, each with its seconds."""
    task = train.task
    t0 = time.perf_counter()
    f_train, f_dev = features(directory, init, [train, dev], max_len)
    row = {"features_s": time.perf_counter() - t0, "dim": int(f_train.shape[1])}
    y_train, y_dev = np.asarray(train.labels), np.asarray(dev.labels)
    t0 = time.perf_counter()
    row["logme"] = logme(f_train, y_train, task)
    row["logme_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = knn_predict(f_train, y_train, f_dev, task)
    knn_metric = metric if metric != "roc_auc" else "accuracy"  # a vote has no scores to rank
    row["knn"] = compute_metrics([knn_metric], preds, y_dev)[knn_metric]
    row["knn_metric"] = knn_metric
    row["knn_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds, probs = linear_probe_predict(f_train, y_train, f_dev, task)
    row["linear"] = compute_metrics([metric], preds, y_dev, probs)[metric]
    row["linear_s"] = time.perf_counter() - t0
    return row


def fine_tuned_scores(path: str | Path, names: list[str]) -> dict[str, float]:
    """Fine-tuned score per candidate name: from a compare grid's results.jsonl (the mean headline metric of its
    `finetune` runs, or `scratch` runs for a scratch candidate, at the largest budget), or a JSON {name: score}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--against '{path}' does not exist; pass a compare grid's results.jsonl or a JSON file "
                        f"{{\"name\": score}}.")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: float(v) for k, v in data.items() if k in names}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {}
    for name in names:
        kind = "scratch" if name == "scratch" else "finetune"
        mine = [r for r in rows if r.get("kind") == kind and (kind == "scratch" or r.get("checkpoint") == name)]
        if not mine:
            continue
        top = max(r["budget_size"] for r in mine)
        values = [(r.get("test") or r["final"])[r["metric"]] for r in mine if r["budget_size"] == top]
        out[name] = float(np.mean(values))
        out[f"{name}__wall_s"] = float(sum(r["wall_s"] for r in mine if r["budget_size"] == top))
    return out


def assess(spec: str | Path | dict, checkpoints: list[str], against: str | Path | None = None,
           out: str | Path | None = None, progress: bool = True, max_train: int | None = None) -> dict:
    """Score every candidate checkpoint for the spec's task; rank them; with ``against``, compare each ranking
    with the fine-tuned one (Kendall τ). ``max_train``: training examples scored (default: the spec's
    ``max_train``, else 2000; a stratified, seeded sample). Returns {"rows", "tau", "table", "task"}; with
    ``out``, writes assess.json and assess.md there."""
    from ..tasks.factory import checkpoint_modality

    task = AssessTask.parse(spec)
    if len(checkpoints) < 1:
        raise UserError("--checkpoints: name at least one checkpoint directory (two or more to rank).")
    candidates = [_candidate(c) for c in checkpoints]
    names = [c[0] for c in candidates]
    if len(set(names)) != len(names):
        raise UserError(f"two candidates share a name ({', '.join(names)}); name them NAME=DIR.")
    kinds = {}
    for name, directory, _ in candidates:
        if not (Path(directory) / "config.json").is_file():
            raise UserError(f"--checkpoints: '{directory}' is not a checkpoint directory (no config.json).")
        kinds[name] = checkpoint_modality(directory)
    if len(set(kinds.values())) > 1:
        raise UserError(f"--checkpoints mixes modalities ({', '.join(f'{n}: {m}' for n, m in kinds.items())}); assess "
                        f"ranks checkpoints of the task's kind of input only.")
    modality = next(iter(kinds.values()))
    train, dev = task.read(modality)
    if max_train is not None and max_train < 2:
        raise UserError(f"--max-train must be at least 2, got {max_train}.")
    train = _subsample(train, max_train or task.max_train)
    metric = task.task["metric"]
    rows = []
    for name, directory, init in candidates:
        row = {"name": name, "path": directory, "init": init,
               **score_checkpoint(directory, init, train, dev, metric)}
        rows.append(row)
        if progress:
            print(f"  {name}: LogME {row['logme']:.4f}, kNN {row['knn_metric']} {row['knn']:.4f}, linear {metric} "
                  f"{row['linear']:.4f} ({row['features_s'] + row['logme_s'] + row['knn_s'] + row['linear_s']:.1f} s)")
    tau = {}
    if against is not None:
        tuned = fine_tuned_scores(against, names)
        for row in rows:
            row["fine_tuned"] = tuned.get(row["name"])
            row["fine_tune_wall_s"] = tuned.get(f"{row['name']}__wall_s")
        known = [r for r in rows if r["fine_tuned"] is not None]
        for s in SCORES:
            tau[s] = kendall_tau([r[s] for r in known], [r["fine_tuned"] for r in known]) if len(known) > 1 \
                else float("nan")
    table = _table(rows, metric, tau)
    result = {"task": task.task, "train_examples": len(train), "dev_examples": len(dev), "rows": rows, "tau": tau,
              "table": table}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "assess.json", json.dumps(result, indent=2, default=float) + "\n")
        write_text(out / "assess.md", f"# assess: {task.task['train']}\n\n{len(train)} training and {len(dev)} dev "
                                      f"examples; headline metric {metric}.\n\n{table}\n")
    if progress:
        print(table)
    return result


def _table(rows: list[dict], metric: str, tau: dict) -> str:
    order = sorted(rows, key=lambda r: -r["logme"])
    header = ["rank (LogME)", "checkpoint", "LogME", "kNN", f"linear {metric}", "s (features + scores)"]
    if any(r.get("fine_tuned") is not None for r in rows):
        header += [f"fine-tuned {metric}", "fine-tuning s"]
    body = []
    for i, r in enumerate(order, 1):
        seconds = f"{r['features_s']:.1f} + {r['logme_s']:.2f} / {r['knn_s']:.2f} / {r['linear_s']:.2f}"
        line = [str(i), r["name"], f"{r['logme']:.4f}", f"{r['knn']:.4f}", f"{r['linear']:.4f}", seconds]
        if len(header) > 6:
            line += ["-" if r.get("fine_tuned") is None else f"{r['fine_tuned']:.4f}",
                     "-" if r.get("fine_tune_wall_s") is None else f"{r['fine_tune_wall_s']:.0f}"]
        body.append(line)
    text = markdown_table(header, body)
    if tau:
        text += "\n\nKendall τ with the fine-tuned ranking: " + ", ".join(
            f"{s} {v:+.2f}" if np.isfinite(v) else f"{s} undefined" for s, v in tau.items())
    return text
