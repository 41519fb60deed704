"""Multi-task training from files: one backbone, a head per task, trained jointly — the function behind each run
of `transferlab multitask` (a single-task baseline is the same function with one task).

Tasks come from separate files (GLUE-style: each task its own train/dev files) or share one file (``data``) with a
label column per task, where an empty cell or ``?`` is a missing label. Tasks reading the same file share its
examples (one source); every other task is a source of its own, and each training step draws its batch from one
source (``sampling``). ``MultitaskConfig`` (``recipes/settings.py``) is fine-tuning's training settings plus the
tasks, their sampling and loss weighting: declared once, validated when built, and the source of the spec's
`train:` keys and of `transferlab multitask`'s options.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, replace

import numpy as np

from ..data.multitask import TaskSource, read_task_source
from ..errors import UserError
from ..fsutil import check_output_dir, clear_output_dir, write_json
from ..tasks.factory import checkpoint_modality
from ..training.distributed import barrier, is_main
from ..training.optim import default_lr_line
from .settings import MultitaskConfig

__all__ = ["MultitaskConfig", "train_multitask", "read_sources"]

DATA_KEYS = ("train", "dev", "test", "text_cols", "path_col", "image_size", "max_train")


# A grid reads the same files for every run; in one process they are read once (in a pool, once per worker).
_CACHE: dict = {}


def tasks_by_file(cfg: MultitaskConfig) -> list[tuple[dict, list[dict]]]:
    """Tasks grouped by the file they read: [(file settings, [task dicts])], in first-seen order."""
    groups: dict[tuple, tuple[dict, list]] = {}
    for t in cfg.tasks:
        where = {k: t[k] for k in DATA_KEYS if t.get(k) is not None} if t.get("train") else dict(cfg.data or {})
        if not where.get("train"):
            raise UserError(f"task '{t['name']}' has no training data: give it `train:` or put its column in the "
                            f"spec's shared `data:`.")
        key = tuple(str(where.get(k)) for k in DATA_KEYS)
        groups.setdefault(key, (where, []))[1].append(t)
    return list(groups.values())


def read_sources(cfg: MultitaskConfig, split: str, modality: str, label_names: dict | None = None
                 ) -> list[TaskSource]:
    """The sources of ``split`` ("train", "dev", "test"); a group without that split is left out. Examples
    labelled for none of their source's tasks are dropped (they train nothing)."""
    out = []
    for where, tasks in tasks_by_file(cfg):
        path = where.get(split)
        if not path:
            if split == "dev":
                raise UserError(f"task(s) {', '.join(t['name'] for t in tasks)} have no dev data; give `dev:`.")
            continue
        size = where.get("image_size")
        size = (size, size) if isinstance(size, int) else tuple(size) if size else None
        specs = tuple((t["name"], t.get("kind", "classification"), tuple(t.get("columns") or ())) for t in tasks)
        names = {t["name"]: (label_names or {}).get(t["name"]) for t in tasks}
        key = (str(path), split, modality, specs, str(where.get("text_cols")), where.get("path_col"), size,
               str(sorted((k, tuple(v) if v else None) for k, v in names.items())))
        if key not in _CACHE:
            source = read_task_source(path, [{"name": n, "kind": k, "columns": list(c) or None} for n, k, c in specs],
                                      modality, split, where.get("text_cols"), where.get("path_col"), size, names)
            labelled = np.zeros(len(source), dtype=bool)
            for t in source.tasks.values():
                p = t.present
                labelled |= p.any(axis=1) if p.ndim == 2 else p
            _CACHE[key] = source if labelled.all() else source.subset(np.flatnonzero(labelled))
        out.append(_CACHE[key])
    return out


def _subsample(source: TaskSource, n: int | None, seed: int) -> TaskSource:
    if n is None or n >= len(source):
        return source
    return source.subset(np.sort(np.random.default_rng([seed, 7]).permutation(len(source))[:n]))


def train_multitask(cfg: MultitaskConfig, overwrite: bool = False) -> dict:
    """Train the tasks of ``cfg`` jointly and score each on its dev (and test) split with the final weights.

    Returns:
        {"tasks": {name: {"dev": metrics, "test": metrics (if a test split), "train_examples": n}},
         "history": per-evaluation rows, "train_examples": per source, "weighting", "lr": the learning rate it
         trained at (the model's default when ``cfg.lr`` is None), "task_weights" (learned weightings)}. With
        ``out``, also RUN/{run.json (the settings, with that lr), metrics.jsonl, final/, results.json}.
    """
    from ..transfer import from_pretrained

    if cfg.init == "scratch":
        if not cfg.like:
            raise UserError("init 'scratch' needs like: the checkpoint whose architecture the from-scratch twin copies.")
        source_dir, init = cfg.like, "scratch"
    else:
        source_dir, init = cfg.init, "pretrained"
    modality = checkpoint_modality(source_dir)
    train = read_sources(cfg, "train", modality)
    maxes = [where.get("max_train") for where, _ in tasks_by_file(cfg) if where.get("train")]
    train = [_subsample(s, m, cfg.seed) for s, m in zip(train, maxes)]
    if cfg.drop_incomplete:
        train = [s.complete() for s in train]
        empty = [s.name for s in train if len(s) == 0]
        if empty:
            raise UserError(f"drop_incomplete leaves no example of {', '.join(empty)}: none is labelled for every "
                            f"task. Mask the missing labels instead (the default).")
    names = {n: t.label_names for s in train for n, t in s.tasks.items()}
    dev = read_sources(cfg, "dev", modality, names)
    test = read_sources(cfg, "test", modality, names)
    model = from_pretrained(source_dir, heads=train, init=init, keep_heads=cfg.keep_heads, pooling=cfg.pooling,
                            weighting=cfg.weighting, seed=cfg.seed, max_len=cfg.max_len,
                            verbose=cfg.progress and is_main(), **_adaptation(source_dir, train))
    model.compile(settings=cfg, sampling=cfg.sampling, temperature=cfg.temperature,
                  sampling_weights=cfg.sampling_weights, metrics=cfg.metrics, weighting_lr=cfg.weighting_lr)
    recorded = cfg
    if cfg.lr is None:  # chosen from the model, as finetune does: said even when quiet, and recorded
        recorded = replace(cfg, lr=model.compiled["settings"].lr)
        if is_main():
            print(default_lr_line(recorded.lr, modality, getattr(model.module.config, "d_model", None)),
                  file=sys.stderr)
    out = None
    if cfg.out is not None:
        out = check_output_dir(cfg.out, overwrite, "multi-task output")
        barrier()
        if is_main():
            clear_output_dir(cfg.out, overwrite, "multi-task output")
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "run.json", asdict(recorded))
    # Without eval_every, the dev split is scored once, below, rather than also by the loop at its last step.
    history = model.fit(train, validation_data=dev if cfg.eval_every else None, run_dir=out, augment=cfg.augment)
    dev_scores = model.evaluate(dev)
    test_scores = model.evaluate(test) if test else {}
    tasks = {}
    for s in train:
        for name, labels in s.tasks.items():
            p = labels.present
            tasks[name] = {"dev": dev_scores.get(name), "train_examples": int((p.any(axis=1) if p.ndim == 2 else p)
                                                                               .sum()),
                           "metric": model.metrics_for(name)[0]}
            if name in test_scores:
                tasks[name]["test"] = test_scores[name]
    weights = getattr(model.module.weighting, "weights", None)
    results = {"tasks": tasks, "history": history.history, "train_examples": {s.name: len(s) for s in train},
               "weighting": cfg.weighting, "lr": recorded.lr, **({"task_weights": weights()} if weights else {})}
    if out is not None and is_main():
        write_json(out / "results.json", results)
    return results


def _adaptation(directory: str, train: list[TaskSource]) -> dict:
    """Fit an image checkpoint to the data's channels / size (as ``finetune`` does)."""
    from ..tasks.factory import image_adaptation

    if train and train[0].modality == "image":
        return image_adaptation(directory, train[0].data)
    return {}
