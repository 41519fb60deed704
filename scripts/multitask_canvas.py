"""The image multi-task experiments of docs/results/multitask/: MNIST canvases, one task per question about them.

A canvas is a 32x32 black image holding 1-3 MNIST digits (downscaled to 14x14) at random places; the tasks ask
"is there a d?" for d = 0..9 (binary, the driving example's "is there a stop sign?"), and, for the capacity
experiment, "how many digits?" (regression) and "which is the largest digit?" (10 classes). Train canvases use
MNIST's training digits, test canvases its test digits, so no digit image is shared.

    missing  (issue 17, result 2) masking the missing labels vs dropping incomplete examples vs reading '?' as 'no',
             at label fractions 0.25 / 0.5 / 0.8 / 0.9 / 1.0, 3 seeds
    capacity (result 3) one network for three tasks vs a network per task, at four backbone widths, 3 seeds
    weighting the loss weightings on capacity's three tasks (one file, so every step holds all three and PCGrad
             has gradients to project): uncertainty and pcgrad against capacity's equal, widths 4-8-16, 3 seeds
    datasum  (result 4) 'is there a 3?' from 100 labelled canvases, alone or beside k = 1, 3, 9 other
             'is there a d?' tasks of 500 canvases each, 3 seeds

Every run is a resumable row of RUN_DIR/EXPERIMENT/results.jsonl (``experiments.grid.run_grid``); re-running skips
finished runs. Usage:
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python scripts/multitask_canvas.py missing [--out docs/results/multitask]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SIZE, DIGIT = 32, 14
N_TRAIN, N_TEST = 6000, 2000
SETTINGS = dict(steps=500, batch_size=64, lr=1e-2, warmup=0.05, weight_decay=0.01, precision="fp32")
WIDTHS = (8, 16, 32)  # the small CNN: resnet-tiny's layout (one block per stage) at half its widths


def canvases(split: str, n: int, seed: int):
    """(n, 32, 32) uint8 canvases and, per canvas, the digits on it."""
    from transferlab.data.images import read_images

    digits = read_images(DATA, split)
    small = digits.images[..., 0].reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))  # (N, 14, 14): 2x2 average pooling
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    x = np.zeros((n, SIZE, SIZE), dtype=np.float32)
    present = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        pick = rng.integers(0, len(small), k)
        for j in pick:
            a, b = rng.integers(0, SIZE - DIGIT + 1, 2)
            x[i, a:a + DIGIT, b:b + DIGIT] = np.maximum(x[i, a:a + DIGIT, b:b + DIGIT], small[j])
        present.append([int(digits.labels[j]) for j in pick])
    return x.round().astype(np.uint8), present


def has_digit(present, d: int) -> np.ndarray:
    return np.array([int(d in p) for p in present])


@dataclass
class Run:
    experiment: str
    setting: dict
    seed: int
    fingerprint: str = ""
    key: tuple = field(default=())

    def __post_init__(self):
        self.key = (self.experiment, json.dumps(self.setting, sort_keys=True), self.seed)
        text = json.dumps([self.experiment, self.setting, self.seed, SETTINGS, WIDTHS, SIZE, N_TRAIN, N_TEST])
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.experiment} {self.setting} seed {self.seed}"

    def cost(self) -> float:
        return 1.0


_DATA: dict = {}


def data(seed: int):
    """Train and test canvases (the same canvases for every seed: the seed varies the labels hidden and the init)."""
    if "train" not in _DATA:
        _DATA["train"], _DATA["test"] = canvases("train", N_TRAIN, 0), canvases("test", N_TEST, 0)
    return _DATA["train"], _DATA["test"]


def model(tasks: list[dict], seed: int, widths=None):
    import torch

    from transferlab.inputs.image import ImageInputs
    from transferlab.models import build_backbone, image_preset
    from transferlab.tasks.multitask import MultiTaskModule
    from transferlab.transfer.multitask import MultiTaskModel

    torch.manual_seed(seed)
    backbone = build_backbone(image_preset("resnet-tiny", widths=tuple(widths or WIDTHS)))
    inputs = ImageInputs((SIZE, SIZE), 1, (0.1,), (0.25,))
    return MultiTaskModel(MultiTaskModule(backbone, tasks), inputs)


def fit_and_score(tasks, train_sources, test_source, seed: int, widths=None, sampling="proportional",
                  weights=None, weighting="equal") -> dict:
    m = model(tasks, seed, widths)
    m.compile(lr=SETTINGS["lr"], warmup=SETTINGS["warmup"], weight_decay=SETTINGS["weight_decay"],
              precision=SETTINGS["precision"], sampling=sampling, sampling_weights=weights, weighting=weighting,
              metrics={t["name"]: (["pearson"] if t["kind"] == "regression" else ["roc_auc", "accuracy"])
                       for t in tasks})
    m.fit(train_sources, steps=SETTINGS["steps"], batch_size=SETTINGS["batch_size"], seed=seed, verbose=False)
    return m.evaluate([test_source])


def run_missing(run: Run) -> dict:
    from transferlab.data.multitask import source_from_arrays

    (x, digits), (tx, tdigits) = data(run.seed)
    fraction, method = run.setting["fraction"], run.setting["method"]
    rng = np.random.default_rng([run.seed, 11])
    labels = {}
    for d in range(10):
        y = has_digit(digits, d).astype(np.float64)
        hidden = rng.random(len(y)) >= fraction
        if method == "negative":
            y[hidden] = 0.0  # the naive reading of '?': "not there"
        else:
            y[hidden] = np.nan
        labels[f"has{d}"] = ("classification", [None if np.isnan(v) else int(v) for v in y])
    source = source_from_arrays(x, labels, {f"has{d}": ["0", "1"] for d in range(10)}, source="canvas")
    if method == "drop":
        source = source.complete()
    test = source_from_arrays(tx, {f"has{d}": ("classification", has_digit(tdigits, d)) for d in range(10)},
                              {f"has{d}": ["0", "1"] for d in range(10)}, source="canvas-test")
    tasks = [{"name": f"has{d}", "kind": "classification", "num_labels": 2, "label_names": ["0", "1"]}
             for d in range(10)]
    row = {"train_examples": len(source)}
    if len(source) == 0:
        return {**row, "auc": 0.5, "accuracy": None, "note": "no example is labelled for all ten tasks"}
    scores = fit_and_score(tasks, [source], test, run.seed)
    return {**row, "auc": float(np.mean([s["roc_auc"] for s in scores.values()])),
            "accuracy": float(np.mean([s["accuracy"] for s in scores.values()])),
            "per_task_auc": {k: v["roc_auc"] for k, v in scores.items()}}


CAPACITY_TASKS = [{"name": "count", "kind": "regression", "num_labels": 1},
                  {"name": "largest", "kind": "classification", "num_labels": 10,
                   "label_names": [str(d) for d in range(10)]},
                  {"name": "has7", "kind": "classification", "num_labels": 2, "label_names": ["0", "1"]}]


def _capacity_labels(digits):
    return {"count": ("regression", [float(len(p)) for p in digits]),
            "largest": ("classification", [max(p) for p in digits]),
            "has7": ("classification", has_digit(digits, 7))}


def run_capacity(run: Run) -> dict:
    from transferlab.data.multitask import source_from_arrays

    (x, digits), (tx, tdigits) = data(run.seed)
    width = run.setting["width"]
    widths = (width, 2 * width, 4 * width)
    names = {"largest": [str(d) for d in range(10)], "has7": ["0", "1"]}
    wanted = [t for t in CAPACITY_TASKS if run.setting["task"] in ("all", t["name"])]
    keep = {t["name"] for t in wanted}
    train = source_from_arrays(x, {k: v for k, v in _capacity_labels(digits).items() if k in keep}, names)
    test = source_from_arrays(tx, {k: v for k, v in _capacity_labels(tdigits).items() if k in keep}, names)
    scores = fit_and_score(wanted, [train], test, run.seed, widths, weighting=run.setting.get("weighting", "equal"))
    return {"scores": scores, "params": _backbone_params(widths)}


def _backbone_params(widths) -> int:
    from transferlab.models import build_backbone, image_preset

    return sum(p.numel() for p in build_backbone(image_preset("resnet-tiny", widths=tuple(widths))).parameters())


def run_datasum(run: Run) -> dict:
    from transferlab.data.multitask import source_from_arrays

    (x, digits), (tx, tdigits) = data(run.seed)
    k, n_target, n_other = run.setting["k"], 100, 500
    rng = np.random.default_rng([run.seed, 13])
    order = rng.permutation(len(x))
    others = [d for d in range(10) if d != 3]
    picked = [int(d) for d in rng.permutation(others)[:k]]
    sources = [source_from_arrays(x[order[:n_target]], {"has3": ("classification", has_digit(
        [digits[i] for i in order[:n_target]], 3))}, {"has3": ["0", "1"]}, source="target")]
    tasks = [{"name": "has3", "kind": "classification", "num_labels": 2, "label_names": ["0", "1"]}]
    start = n_target
    for d in picked:
        idx = order[start:start + n_other]
        start += n_other
        sources.append(source_from_arrays(x[idx], {f"has{d}": ("classification", has_digit([digits[i] for i in idx], d))},
                                          {f"has{d}": ["0", "1"]}, source=f"has{d}"))
        tasks.append({"name": f"has{d}", "kind": "classification", "num_labels": 2, "label_names": ["0", "1"]})
    weights = {"has3": 1.0, **{f"has{d}": 1.0 / k for d in picked}} if k else None
    test = source_from_arrays(tx, {"has3": ("classification", has_digit(tdigits, 3))}, {"has3": ["0", "1"]},
                              source="test")
    # Half the steps draw the target, half the others (weighted), so the target's own steps do not shrink with k.
    scores = fit_and_score(tasks, sources, test, run.seed, sampling="weighted" if k else "proportional",
                           weights=weights)
    return {"target_auc": scores["has3"]["roc_auc"], "target_accuracy": scores["has3"]["accuracy"],
            "other_tasks": [f"has{d}" for d in picked], "other_examples": n_other * k}


EXPERIMENTS = {
    "missing": (run_missing, [{"fraction": 1.0, "method": "mask"}] + [
        {"fraction": f, "method": m} for f in (0.25, 0.5, 0.8, 0.9) for m in ("mask", "drop", "negative")]),
    "capacity": (run_capacity, [{"width": w, "task": t} for w in (2, 4, 8, 16)
                                for t in ("all", "count", "largest", "has7")]),
    "datasum": (run_datasum, [{"k": k} for k in (0, 1, 3, 9)]),
    # 'equal' is capacity's joint run at the same width (the same settings): not trained twice
    "weighting": (run_capacity, [{"width": 4, "task": "all", "weighting": m} for m in ("uncertainty", "pcgrad")]),
}


def run_row(run: Run) -> dict:
    fn = EXPERIMENTS[run.experiment][0]
    start = time.perf_counter()
    row = fn(run)
    return {"experiment": run.experiment, "setting": run.setting, "seed": run.seed, **row,
            "wall_s": round(time.perf_counter() - start, 2), "fingerprint": run.fingerprint}


def write_npz(out: Path) -> None:
    """Canvas tasks as MedMNIST-style .npz files (train / val / test) for compare and assess: has3.npz ("is there
    a 3?") and count.npz ("how many digits?", 1-3 as classes)."""
    out.mkdir(parents=True, exist_ok=True)
    (x, digits), (tx, tdigits) = data(0)
    splits = {"train": (x[:5000], digits[:5000]), "val": (x[5000:], digits[5000:]), "test": (tx, tdigits)}
    for name, label in (("has3", lambda ds: has_digit(ds, 3)), ("count", lambda ds: np.array([len(p) for p in ds]))):
        arrays = {}
        for split, (images, ds) in splits.items():
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, label(ds)[:, None].astype(np.uint8)
        np.savez_compressed(out / f"{name}.npz", **arrays)
        print(f"wrote {out / f'{name}.npz'}", file=sys.stderr)


def main() -> None:
    import torch

    from transferlab.experiments.grid import run_grid

    p = argparse.ArgumentParser()
    p.add_argument("experiment", choices=list(EXPERIMENTS) + ["npz"])
    p.add_argument("--out", default="docs/results/multitask")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.experiment == "npz":
        return write_npz(Path(a.out))
    out = Path(a.out) / a.experiment
    out.mkdir(parents=True, exist_ok=True)
    # seed-major order: stopping early leaves whole seeds, not a grid with holes in every seed
    plan = [Run(a.experiment, s, seed) for seed in range(a.seeds) for s in EXPERIMENTS[a.experiment][1]]
    if a.experiment == "capacity":  # narrowest first, every seed of a width before the next: whole widths, cheap first
        plan.sort(key=lambda run: run.setting["width"])
    run_grid(plan, run_row, out / "results.jsonl",
             row_key=lambda r: (r["experiment"], json.dumps(r["setting"], sort_keys=True), r["seed"]),
             describe=lambda run, row: f"  {run.label}: {json.dumps({k: v for k, v in row.items() if k in ('auc', 'target_auc', 'train_examples', 'wall_s')})}")
    print(f"wrote {out / 'results.jsonl'}", file=sys.stderr)


if __name__ == "__main__":
    main()
