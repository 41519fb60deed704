"""`transferlab multitask SPEC.yaml`: tasks trained jointly on one backbone against each task trained alone with
the same budget and settings, over seeds, with Δm and negative transfer flagged per task.

The spec (see ``examples/multitask_glue.yaml``, ``examples/multitask_canvas.yaml``) names the checkpoint, the tasks
(each with its own files, or columns of a shared ``data:`` file where an empty cell or ``?`` is a missing label),
the sampling, the loss weightings to try (one joint run each), the training settings and the seeds. Everything is
read and checked before the first run: a task name used twice, a head kind that does not fit its labels, a task
whose every label is missing, sampling weights that do not sum to something positive, a spec mixing text and image
data on one backbone — each a message naming the spec's line and the fix.

Every run is a ``MultitaskRun`` holding plain settings (a ``MultitaskConfig``) and is run by the module-level
``run_one``, so a grid executor may run them in other processes. ``grid.run_grid`` runs and resumes them.

Δm (Maninis et al. 2019; Vandenhende et al. 2021) is the mean over tasks of the relative change of the joint model's
headline metric against the single-task one, in percent, signed so that positive is better whatever the metric's
direction: Δm = 100/T Σ_t (-1)^{l_t} (M_joint,t - M_single,t) / |M_single,t|, with l_t = 1 when lower is better.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.multitask import MT_KINDS, SAMPLING
from ..errors import UserError
from ..evaluation.multitask import check_task_metrics, default_task_metrics
from ..fsutil import write_text
from ..inputs import data_modality
from ..options import SettingError, check_value
from ..recipes.multitask import MultitaskConfig, read_sources, tasks_by_file
from ..tasks.factory import checkpoint_modality
from ..tasks.weighting import PCGRAD_ONE_TASK_PER_STEP, WEIGHTINGS
from ..training.checkpoint import load_config
from ..training.optim import default_lr_for, default_lr_line, format_lr
from .grid import RESULTS, run_grid
from .report import markdown_table
from .spec import SpecReader, read_spec

TOP_KEYS = ("name", "checkpoint", "init", "like", "data", "tasks", "sampling", "weighting", "baselines", "train",
            "seeds", "out")
TASK_KEYS = ("name", "kind", "column", "columns", "train", "dev", "test", "text_cols", "path_col", "image_size",
             "max_train", "metric", "metrics")
DATA_KEYS = ("train", "dev", "test", "text_cols", "path_col", "image_size", "max_train")
SAMPLING_KEYS = ("strategy", "temperature", "weights")
LOWER_IS_BETTER = {"loss", "mse", "mae"}
SUMMARY, REPORT_MD = "summary.csv", "report.md"
SINGLE = "single"


@dataclass
class MultitaskRun:
    variant: str  # "single", or "joint" / "joint-<weighting>"
    task: str | None  # the task of a single-task run
    seed: int
    cfg: MultitaskConfig
    fingerprint: str
    examples: int = 0  # training examples the run draws from (its ETA when it trains for epochs)

    @property
    def key(self) -> tuple:
        return (self.variant, self.task or "", self.seed)

    @property
    def label(self) -> str:
        return f"{self.variant}{f' {self.task}' if self.task else ''}, seed {self.seed}"

    def cost(self) -> float:
        if self.cfg.steps is not None:
            return float(self.cfg.steps * self.cfg.batch_size)
        return float(self.cfg.epochs * self.examples)


@dataclass
class MultitaskSpec(SpecReader):
    """A validated spec; build it with ``MultitaskSpec.parse(path_or_dict)``."""

    source: str
    name: str = ""
    base: MultitaskConfig | None = None
    variants: dict = field(default_factory=dict)  # variant -> weighting
    baselines: bool = True
    seeds: list[int] = field(default_factory=list)
    out: str | None = None
    modality: str = "text"
    headline: dict = field(default_factory=dict)  # task -> its headline metric
    data_id: str = ""
    lr_note: str | None = None  # the line saying which lr the runs use, when the model chose it
    sizes: dict = field(default_factory=dict)  # task -> training examples of its source
    train_examples: int = 0  # of every source together
    lines: dict = field(repr=False, default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Path | dict, overrides: dict | None = None) -> "MultitaskSpec":
        """Read and check ``spec``; ``overrides``: training settings from the command line (``train_keys()``),
        which win over the spec's `train:` section."""
        data, lines, source = read_spec(spec, TOP_KEYS, "examples/multitask_glue.yaml")
        self = cls(source=source, lines=lines)
        self._check_keys(data, (), TOP_KEYS)
        self.name = str(data.get("name") or (Path(source).stem if source != "spec" else "multitask"))
        self.out = data.get("out")
        init, like = self._checkpoint(data)
        shared = self._data(data.get("data"))
        tasks = self._tasks(data.get("tasks"), shared)
        given = self._train(data.get("train") or {})
        train = {**given, **(overrides or {})}
        sampling = self._sampling(data.get("sampling", "proportional"), [t["name"] for t in tasks])
        weightings = self._weightings(data.get("weighting", "equal"))
        self.baselines = self._bool(("baselines",), data.get("baselines", True))
        self.seeds = self._seeds(data.get("seeds", 3))
        if train.get("lr") is None:
            # Chosen once, from the checkpoint, as finetune chooses it: every run (joint and single-task) trains at
            # it, the report says it, and it is part of each run's fingerprint.
            config = load_config(like or init)
            d_model = config["backbone"].get("d_model") if isinstance(config.get("backbone"), dict) else None
            train["lr"] = default_lr_for(self.modality, d_model)
            self.lr_note = default_lr_line(train["lr"], self.modality, d_model)
        try:
            self.base = MultitaskConfig(init=init, like=like, tasks=tasks, data=shared, progress=False, **sampling,
                                        **train, metrics={t["name"]: t["metrics"] for t in tasks if t["metrics"]})
        except SettingError as e:  # a rule across settings, or a range the command line's parser leaves to here
            if e.name in given and e.name not in (overrides or {}):
                raise self.error(("train", e.name), e.problem) from None
            raise
        if "pcgrad" in weightings and all(len(group) == 1 for _, group in tasks_by_file(self.base)):
            raise self.error(("weighting",), PCGRAD_ONE_TASK_PER_STEP)
        self.variants = {("joint" if len(weightings) == 1 else f"joint-{w}"): w for w in weightings}
        self._read_all()
        return self

    # -- pieces --
    def _checkpoint(self, data) -> tuple[str, str | None]:
        ckpt, init, like = data.get("checkpoint"), data.get("init"), data.get("like")
        if ckpt and init:
            raise self.error(("init",), "give either `checkpoint:` (transfer from it) or `init: scratch` with "
                                        "`like:`, not both.")
        if init is not None and init != "scratch":
            raise self.error(("init",), f"'{init}': init is 'scratch' (with `like:`); to transfer from a checkpoint "
                                        f"write `checkpoint: DIR`.")
        path_key = ("like",) if init == "scratch" else ("checkpoint",)
        path = like if init == "scratch" else ckpt
        if not path:
            raise self.error(path_key, "missing: name the checkpoint directory (a `transferlab pretrain` run's "
                                       "final/), or `init: scratch` with `like: DIR`.")
        if not (Path(str(path)) / "config.json").is_file():
            raise self.error(path_key, f"'{path}' is not a checkpoint directory (no config.json).")
        try:
            self.modality = checkpoint_modality(str(path))
        except UserError as e:
            raise self.error(path_key, str(e)) from None
        return ("scratch", str(path)) if init == "scratch" else (str(path), None)

    def _data(self, shared) -> dict | None:
        if shared is None:
            return None
        self._check_keys(shared, ("data",), DATA_KEYS)
        if not shared.get("train") or not shared.get("dev"):
            raise self.error(("data",), "the shared data needs `train:` and `dev:` files.")
        self._modality_of(("data", "train"), shared["train"])
        return {k: v for k, v in shared.items() if v is not None}

    def _modality_of(self, path: tuple, file) -> None:
        found = data_modality(file) if Path(str(file)).exists() else None
        if not Path(str(file)).exists():
            raise self.error(path, f"'{file}' does not exist. Check the path (relative to where you run the command).")
        if found is not None and found != self.modality:
            raise self.error(path, f"'{file}' holds {found} data but the checkpoint reads {self.modality}; one "
                                   f"backbone reads one kind of input. Put {found} tasks in a spec of their own, with "
                                   f"a checkpoint that reads {found}.")

    def _tasks(self, tasks, shared) -> list[dict]:
        if not tasks or not isinstance(tasks, list):
            raise self.error(("tasks",), "a list of tasks is needed, e.g. `- {name: sst2, train: ..., dev: ...}`.")
        out, seen = [], {}
        for i, t in enumerate(tasks):
            path = ("tasks", i)
            self._check_keys(t, path, TASK_KEYS)
            name = t.get("name")
            if not name or not isinstance(name, str) or "." in name or "/" in name:
                raise self.error(path, "every task needs a `name:` (letters, digits, - and _), which names its head "
                                       "and its metrics.")
            if name in seen:
                raise self.error(path + ("name",), f"task name '{name}' is used twice (first at "
                                                   f"{self._where(('tasks', seen[name], 'name'))}); give each task its "
                                                   f"own name.")
            seen[name] = i
            kind = t.get("kind", "classification")
            if kind not in MT_KINDS:
                raise self.error(path + ("kind",), f"unknown kind '{kind}'; choose one of {', '.join(MT_KINDS)}.")
            columns = t.get("columns")
            if t.get("column") is not None and columns is not None:
                raise self.error(path, "give `column:` (one label column) or `columns:` (multilabel), not both.")
            if t.get("column") is not None:
                columns = [str(t["column"])]
            if columns is not None and (not isinstance(columns, list) or not columns):
                raise self.error(path + ("columns",), "a list of label columns, e.g. `columns: [has0, has1]`.")
            if kind == "multilabel" and not columns:
                raise self.error(path + ("kind",), "a multilabel task reads one 0/1 column per label: list them with "
                                                   "`columns: [...]`.")
            if kind != "multilabel" and columns and len(columns) > 1:
                raise self.error(path + ("columns",), f"a {kind} task reads one label column; several 0/1 columns "
                                                      f"make a multilabel task (`kind: multilabel`).")
            own = {k: t[k] for k in DATA_KEYS if t.get(k) is not None}
            if own.get("train"):
                if not own.get("dev"):
                    raise self.error(path, f"task '{name}' has `train:` but no `dev:`; give both.")
                self._modality_of(path + ("train",), own["train"])
            elif shared is None:
                raise self.error(path, f"task '{name}' has no `train:`/`dev:` files and the spec has no shared "
                                       f"`data:`; give one or the other.")
            metrics = t.get("metrics") or []
            metrics = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
            if t.get("metric"):
                metrics = [t["metric"]] + [m for m in metrics if m != t["metric"]]
            out.append({"name": name, "kind": kind, "columns": [str(c) for c in columns] if columns else None,
                        **own, "metrics": metrics or None})
        return out

    def _train(self, train) -> dict:
        """The spec's training settings, each checked as its declaration says (``MultitaskConfig``), with the
        sentence the command line gives for the same value."""
        self._check_keys(train, ("train",), MultitaskConfig.train_keys())
        out = {}
        for k, v in train.items():
            try:
                out[k] = check_value(MultitaskConfig, k, v, from_text=True)
            except SettingError as e:
                raise self.error(("train", k), e.problem) from None
        return out

    def _sampling(self, sampling, names: list[str]) -> dict:
        if isinstance(sampling, str):
            sampling = {"strategy": sampling}
        self._check_keys(sampling, ("sampling",), SAMPLING_KEYS)
        strategy = sampling.get("strategy", "proportional")
        if strategy not in SAMPLING:
            raise self.error(("sampling", "strategy") if "strategy" in sampling else ("sampling",),
                             f"unknown sampling '{strategy}'; choose one of {', '.join(SAMPLING)}.")
        out = {"sampling": strategy}
        if "temperature" in sampling:
            try:
                temperature = float(sampling["temperature"])
            except (TypeError, ValueError):
                temperature = -1.0
            if not temperature > 0:
                raise self.error(("sampling", "temperature"), f"must be a positive number (got "
                                                              f"{sampling['temperature']}); 1 samples in proportion to "
                                                              f"size, larger values flatten towards uniform.")
            out["temperature"] = temperature
        weights = sampling.get("weights")
        if strategy == "weighted" or weights is not None:
            if strategy != "weighted":
                raise self.error(("sampling", "weights"), "weights apply to `strategy: weighted`.")
            if not isinstance(weights, dict):
                raise self.error(("sampling", "weights") if weights is not None else ("sampling",),
                                 f"`strategy: weighted` needs `weights:` with one number per task "
                                 f"({', '.join(names)}).")
            for k, v in weights.items():
                if k not in names:
                    raise self.error(("sampling", "weights", k), f"'{k}' is not a task; the tasks are "
                                                                 f"{', '.join(names)}.")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise self.error(("sampling", "weights", k), f"a weight is a number >= 0 (got {v}).")
            missing = [n for n in names if n not in weights]
            if missing:
                raise self.error(("sampling", "weights"), f"no weight for task(s) {', '.join(missing)}; give every "
                                                          f"task one (0 leaves it out of training).")
            if not sum(weights.values()) > 0:
                raise self.error(("sampling", "weights"), f"the weights sum to {sum(weights.values())}; at least one "
                                                          f"task needs a positive weight or no task is ever trained.")
            out["sampling_weights"] = {k: float(v) for k, v in weights.items()}
        return out

    def _weightings(self, weighting) -> list[str]:
        items = weighting if isinstance(weighting, list) else [weighting]
        for i, w in enumerate(items):
            if w not in WEIGHTINGS:
                path = ("weighting", i) if isinstance(weighting, list) else ("weighting",)
                raise self.error(path, f"unknown loss weighting '{w}'; choose from {', '.join(WEIGHTINGS)}.")
        if len(set(items)) != len(items):
            raise self.error(("weighting",), "a weighting is listed twice.")
        return list(items)

    def _bool(self, path, value) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"is true or false (got {value!r}).")
        return value

    def _seeds(self, seeds) -> list[int]:
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            return list(range(seeds))
        if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            return list(dict.fromkeys(seeds))
        raise self.error(("seeds",), f"'{seeds}' is neither a number of seeds (3) nor a list of seeds ([0, 1, 2]).")

    def _read_all(self) -> None:
        """Read every split now, so a bad file, column or label stops the grid before anything trains."""
        cfg = self.base
        try:
            train = read_sources(cfg, "train", self.modality)
            names = {n: t.label_names for s in train for n, t in s.tasks.items()}
            dev = read_sources(cfg, "dev", self.modality, names)
            read_sources(cfg, "test", self.modality, names)
        except UserError as e:
            raise self.error(("tasks",), str(e)) from None
        kinds = {n: t.kind for s in train for n, t in s.tasks.items()}
        for i, t in enumerate(cfg.tasks):
            labels = next(s.tasks[t["name"]] for s in train if t["name"] in s.tasks)
            metrics = t["metrics"] or default_task_metrics(kinds[t["name"]], labels.num_labels, self.modality)
            try:
                check_task_metrics(t["name"], t["kind"], metrics)
            except UserError as e:
                raise self.error(("tasks", i, "metric" if t["metrics"] else "kind"), str(e)) from None
            self.headline[t["name"]] = metrics[0]
        if cfg.sampling_weights is not None:
            by_source = [sum(cfg.sampling_weights[n] for n in s.tasks) for s in train]
            if not sum(by_source) > 0:
                raise self.error(("sampling", "weights"), "no source of training data has a positive weight.")
        self.sizes = {n: len(s) for s in train for n in s.tasks}
        self.train_examples = sum(len(s) for s in train)
        files = sorted({s.name for s in train + dev})
        self.data_id = _hash(json.dumps([[f, _file_hash(f)] for f in files]))

    # -- the grid --
    def plan(self) -> list[MultitaskRun]:
        """Per seed: one joint run per weighting, then (with baselines) one single-task run per task, with the same
        steps, batch size and settings."""
        runs = []
        ckpt = self.base.init if self.base.init != "scratch" else self.base.like
        ckpt_id = _file_hash(str(Path(ckpt) / "model.safetensors"))
        for seed in self.seeds:
            for variant, weighting in self.variants.items():
                cfg = replace(self.base, seed=seed, weighting=weighting)
                runs.append(self._run(variant, None, cfg, ckpt_id))
            if self.baselines:
                for t in self.base.tasks:
                    single = [dict(t)]
                    if not t.get("train"):  # a column of the shared file: the same file, this task's labels only
                        single[0].update({k: v for k, v in (self.base.data or {}).items()})
                    weights = {t["name"]: 1.0} if self.base.sampling_weights else None
                    cfg = replace(self.base, seed=seed, weighting="equal", tasks=single, data=None,
                                  sampling_weights=weights,
                                  metrics={t["name"]: t["metrics"]} if t["metrics"] else None)
                    runs.append(self._run(SINGLE, t["name"], cfg, ckpt_id))
        return runs

    def _run(self, variant, task, cfg, ckpt_id) -> MultitaskRun:
        # the fingerprint sees the paths as the spec wrote them; the run reads them absolute, so a worker process
        # (or a Ray node with the same file system) started elsewhere reads the same files
        fingerprint = _hash(json.dumps([asdict(cfg), self.data_id, ckpt_id], sort_keys=True, default=str))[:16]
        examples = self.sizes.get(task, 0) if task else self.train_examples
        return MultitaskRun(variant, task, cfg.seed, _absolute(cfg), fingerprint, examples)

    def paths(self) -> list[str]:
        """Every file and directory a run reads, absolute: the checkpoint and the tasks' data files."""
        cfg = _absolute(self.base)
        found = [cfg.init if cfg.init != "scratch" else cfg.like]
        for entry in [*cfg.tasks, cfg.data or {}]:
            found += [entry[k] for k in ("train", "dev", "test") if entry.get(k)]
        return list(dict.fromkeys(found))

    def describe(self) -> dict:
        return {"name": self.name, "spec": self.source, "modality": self.modality,
                "checkpoint": self.base.like if self.base.init == "scratch" else self.base.init,
                "init": "scratch" if self.base.init == "scratch" else "pretrained",
                "tasks": [{k: v for k, v in t.items() if v is not None} for t in self.base.tasks],
                "headline": self.headline, "variants": self.variants, "seeds": self.seeds,
                "sampling": self.base.sampling, "temperature": self.base.temperature,
                "sampling_weights": self.base.sampling_weights,
                "train": {k: getattr(self.base, k) for k in MultitaskConfig.train_keys()}}


def _absolute(cfg: MultitaskConfig) -> MultitaskConfig:
    """``cfg`` with its checkpoint and data paths made absolute (from this process's working directory)."""
    def files(entry: dict) -> dict:
        return {k: (os.path.abspath(str(v)) if k in ("train", "dev", "test") and v else v) for k, v in entry.items()}

    return replace(cfg, init=cfg.init if cfg.init == "scratch" else os.path.abspath(cfg.init),
                   like=os.path.abspath(cfg.like) if cfg.like else None, tasks=[files(t) for t in cfg.tasks],
                   data=files(cfg.data) if cfg.data else None)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_hash(path: str) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


# ------------------------------------------------------------------------------------------------ one run


def run_one(run: MultitaskRun) -> dict:
    """Train one run of the grid (module-level and fed plain settings, so a process pool can run it)."""
    from ..recipes.multitask import train_multitask

    start = time.perf_counter()
    results = train_multitask(run.cfg)
    return {"variant": run.variant, "task": run.task, "seed": run.seed, "weighting": run.cfg.weighting,
            "lr": results["lr"], "tasks": results["tasks"], "task_weights": results.get("task_weights"),
            "train_examples": results["train_examples"], "wall_s": round(time.perf_counter() - start, 3),
            "fingerprint": run.fingerprint}


# ------------------------------------------------------------------------------------------------ Δm and flags


def relative_change(joint: float, single: float, metric: str) -> float:
    """(joint - single) / |single|, signed so that positive means the joint model is better; NaN when the single
    value is 0 (a relative change of nothing is undefined)."""
    if single == 0 or not np.isfinite(single) or not np.isfinite(joint):
        return float("nan")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return sign * (joint - single) / abs(single)


def delta_m(joint: dict[str, float], single: dict[str, float], metrics: dict[str, str]) -> float:
    """Δm in percent: the mean over tasks of ``relative_change`` (tasks with an undefined change left out)."""
    changes = [relative_change(joint[t], single[t], metrics[t]) for t in single if t in joint]
    changes = [c for c in changes if np.isfinite(c)]
    return float(100.0 * np.mean(changes)) if changes else float("nan")


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _headline(row: dict, task: str, metric: str) -> float:
    scores = row["tasks"][task].get("test") or row["tasks"][task]["dev"]
    return float(scores[metric])


def summarize(rows: list[dict], setup: dict) -> dict:
    """Per task and variant: mean ± std over seeds of the headline metric, the paired difference from the
    single-task run and a verdict; per joint variant: Δm (of the seed means, and mean ± std of per-seed Δm)."""
    headline = setup["headline"]
    split = "test" if any("test" in r["tasks"][t] for r in rows for t in r["tasks"]) else "dev"
    single = {(r["task"], r["seed"]): _headline(r, r["task"], headline[r["task"]])
              for r in rows if r["variant"] == SINGLE}
    cells, deltas = [], {}
    for variant in setup["variants"]:
        joint_rows = [r for r in rows if r["variant"] == variant]
        per_seed_delta = []
        for r in joint_rows:
            js = {t: _headline(r, t, headline[t]) for t in headline}
            ss = {t: single[(t, r["seed"])] for t in headline if (t, r["seed"]) in single}
            if ss:
                per_seed_delta.append(delta_m(js, ss, headline))
        for task, metric in headline.items():
            values = [_headline(r, task, metric) for r in joint_rows]
            base = [single[(task, r["seed"])] for r in joint_rows if (task, r["seed"]) in single]
            diffs = [_headline(r, task, metric) - single[(task, r["seed"])] for r in joint_rows
                     if (task, r["seed"]) in single]
            cell = {"task": task, "variant": variant, "metric": metric, "seeds": len(values),
                    "mean": float(np.mean(values)) if values else float("nan"), "std": _std(values),
                    "single_mean": float(np.mean(base)) if base else None, "single_std": _std(base) if base else None,
                    "diff": float(np.mean(diffs)) if diffs else None, "diff_std": _std(diffs) if diffs else None}
            cell["verdict"] = verdict(cell, metric)
            cells.append(cell)
        means = {c["task"]: c["mean"] for c in cells if c["variant"] == variant}
        bases = {c["task"]: c["single_mean"] for c in cells if c["variant"] == variant and c["single_mean"] is not None}
        deltas[variant] = {"delta_m": delta_m(means, bases, headline) if bases else None,
                           "delta_m_seed_mean": float(np.mean(per_seed_delta)) if per_seed_delta else None,
                           "delta_m_seed_std": _std(per_seed_delta) if per_seed_delta else None}
    singles = [{"task": t, "variant": SINGLE, "metric": m, "seeds": len(v), "mean": float(np.mean(v)),
                "std": _std(v)} for t, m in headline.items()
               if (v := [s for (task, _), s in single.items() if task == t])]
    return {"cells": cells, "singles": singles, "delta_m": deltas, "split": split}


def verdict(cell: dict, metric: str) -> str:
    """"negative transfer" when the joint model is worse than the single-task one by more than twice the larger
    seed spread (paired by seed), "positive transfer" when better by that much, otherwise "within noise"."""
    if cell["diff"] is None:
        return "no baseline"
    better = -cell["diff"] if metric in LOWER_IS_BETTER else cell["diff"]
    if cell["seeds"] < 2:
        return "negative (one seed)" if better < 0 else "positive (one seed)" if better > 0 else "tie"
    spread = 2 * max(cell["std"], cell["single_std"] or 0.0, cell["diff_std"] or 0.0)
    if better < -spread:
        return "negative transfer"
    if better > spread:
        return "positive transfer"
    return "within noise"


def conclusions(summary: dict, setup: dict) -> list[str]:
    out = []
    for variant, d in summary["delta_m"].items():
        cells = [c for c in summary["cells"] if c["variant"] == variant]
        neg = [c["task"] for c in cells if c["verdict"] == "negative transfer"]
        pos = [c["task"] for c in cells if c["verdict"] == "positive transfer"]
        if d["delta_m"] is None:
            out.append(f"**{variant}**: no single-task baselines to compare against.")
            continue
        spread = f" (per seed {d['delta_m_seed_mean']:+.2f} ± {d['delta_m_seed_std']:.2f})" \
            if d["delta_m_seed_mean"] is not None else ""
        text = f"**{variant}** ({setup['variants'][variant]} weighting): Δm = {d['delta_m']:+.2f}%{spread} against " \
               f"the single-task models."
        text += (f" Negative transfer on {', '.join(neg)}." if neg else " No task shows negative transfer beyond "
                 "twice the seed spread.")
        if pos:
            text += f" Positive transfer on {', '.join(pos)}."
        out.append(text)
    if len(summary["delta_m"]) > 1:
        ranked = sorted(((v, d["delta_m"]) for v, d in summary["delta_m"].items() if d["delta_m"] is not None),
                        key=lambda kv: -kv[1])
        if ranked:
            out.append("By Δm: " + " > ".join(f"{v} ({dm:+.2f}%)" for v, dm in ranked) + ".")
    return out


def render(setup: dict, summary: dict, paragraphs: list[str]) -> str:
    seeds = len(setup["seeds"])
    t = setup["train"]
    length = f"{t['steps']} steps" if t.get("steps") is not None else f"{t['epochs']} epochs"
    lines = [f"# Multi-task: {setup['name']}", "",
             f"Backbone: `{setup['checkpoint']}` ({setup['init']}); {setup['modality']} tasks; sampling "
             f"{setup['sampling']}" + (f" (T = {setup['temperature']})" if setup["sampling"] == "temperature" else "")
             + f"; {seeds} seed(s). Every run trains for {length} of {t['batch_size']} at lr {format_lr(t['lr'])} "
               f"({t['schedule']} schedule, {t['warmup']} warm-up, weight decay {t['weight_decay']}); a single-task "
               f"baseline is the same recipe with one head. Headline metric per task on {summary['split']}.", ""]
    header = ["task", "metric", "single"] + [v for v in setup["variants"]]
    body = []
    singles = {s["task"]: s for s in summary["singles"]}
    for task, metric in setup["headline"].items():
        row = [task, metric, f"{singles[task]['mean']:.4f} ± {singles[task]['std']:.4f}" if task in singles else "-"]
        for v in setup["variants"]:
            c = next(c for c in summary["cells"] if c["task"] == task and c["variant"] == v)
            diff = f" ({c['diff']:+.4f}; {c['verdict']})" if c["diff"] is not None else ""
            row.append(f"{c['mean']:.4f} ± {c['std']:.4f}{diff}")
        body.append(row)
    lines += [markdown_table(header, body), ""]
    dm = [[v, f"{d['delta_m']:+.2f}%" if d["delta_m"] is not None else "-",
           f"{d['delta_m_seed_mean']:+.2f} ± {d['delta_m_seed_std']:.2f}" if d["delta_m_seed_mean"] is not None
           else "-"] for v, d in summary["delta_m"].items()]
    lines += [markdown_table(["joint variant", "Δm (of seed means)", "Δm per seed (mean ± std)"], dm), ""]
    lines += ["Δm = 100/T Σ_t ±(M_joint − M_single)/|M_single| (sign flipped for lower-is-better metrics). "
              "\"negative transfer\": the joint model is worse by more than twice the largest seed spread (paired by "
              "seed); \"within noise\": the difference is smaller than that.", ""]
    lines += [p + "\n" for p in paragraphs]
    return "\n".join(lines)


def summary_csv(summary: dict) -> str:
    rows = ["task,variant,metric,seeds,mean,std,single_mean,single_std,diff,diff_std,verdict"]
    for c in summary["singles"] + summary["cells"]:
        rows.append(",".join(str(c.get(k, "")) if c.get(k) is not None else "" for k in
                             ("task", "variant", "metric", "seeds", "mean", "std", "single_mean", "single_std", "diff",
                              "diff_std", "verdict")))
    return "\n".join(rows) + "\n"


def run_multitask(spec_or_path, out: str | Path | None = None, progress: bool = True, executor=None,
                  overrides: dict | None = None) -> dict:
    """Run (or resume) a multi-task spec and write results.jsonl, summary.csv and report.md.

    Args:
        spec_or_path: a spec file, a dict, or a parsed ``MultitaskSpec``.
        out: the output directory (default: the spec's ``out:``, else runs/multitask/NAME).
        progress: print progress and the report.
        executor: an ``experiments.executors.ExecutorConfig`` (worker processes, Ray); None: this process.
        overrides: training settings that win over the spec's `train:` (``MultitaskConfig.train_keys()``; the
            command line's --lr, --steps, ...).
    Returns:
        {"rows", "summary", "conclusion", "files", "ran", "skipped"}.
    """
    if isinstance(spec_or_path, MultitaskSpec) and overrides:
        raise UserError("run_multitask: a parsed spec has its settings already; pass overrides to "
                        "MultitaskSpec.parse(spec, overrides) instead.")
    spec = spec_or_path if isinstance(spec_or_path, MultitaskSpec) else MultitaskSpec.parse(spec_or_path, overrides)
    if spec.lr_note:  # said even when quiet, as finetune says it
        print(spec.lr_note, file=sys.stderr)
    out = Path(out) if out is not None else Path(spec.out) if spec.out else Path("runs") / "multitask" / spec.name
    results_path = out / RESULTS
    if out.is_dir() and any(out.iterdir()) and not results_path.is_file():
        raise UserError(f"'{out}' already holds files but no {RESULTS}, so it is not a multi-task grid to resume. "
                        f"Choose another --out.")
    out.mkdir(parents=True, exist_ok=True)

    def describe(run: MultitaskRun, row: dict) -> str:
        scores = ", ".join(f"{t} {spec.headline[t]} {_headline(row, t, spec.headline[t]):.4f}" for t in row["tasks"])
        return f"  {run.label}: {scores} ({row['wall_s']:.1f} s)"

    def stale():
        for name in (SUMMARY, REPORT_MD):
            (out / name).unlink(missing_ok=True)

    plan = spec.plan()
    grid = run_grid(plan, run_one, results_path, row_key=lambda r: (r["variant"], r["task"] or "", r["seed"]),
                    progress=progress, describe=describe, on_resume=stale, executor=executor, paths=spec.paths())
    if grid["failed"]:
        listed = "; ".join(f"{f['label']} (log: {f['log']})" for f in grid["failed"][:5])
        raise UserError(f"{len(grid['failed'])} of {len(plan)} runs failed: {listed}. The {len(grid['rows'])} "
                        f"finished runs are kept in {results_path}; no report was written, since it would leave "
                        f"the failed runs out. Read the logs, then run the same command again: it runs only what "
                        f"is missing.")
    setup = spec.describe()
    summary = summarize(grid["rows"], setup)
    paragraphs = conclusions(summary, setup)
    files = [write_text(out / SUMMARY, summary_csv(summary)), write_text(out / REPORT_MD,
                                                                         render(setup, summary, paragraphs))]
    if progress:
        print(render(setup, summary, paragraphs))
    return {"rows": grid["rows"], "summary": summary, "conclusion": paragraphs, "files": files, "ran": grid["ran"],
            "skipped": grid["skipped"]}


__all__ = ["MultitaskSpec", "MultitaskRun", "run_one", "run_multitask", "delta_m", "relative_change", "verdict",
           "summarize"]
