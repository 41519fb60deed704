"""`transferlab compare SPEC.yaml`: transfer methods x label budgets x seeds, and a report people want to read.

The spec (YAML) names the pretrained checkpoints, the task, the methods, the label budgets and the seeds; see
``examples/compare_sst2.yaml``. Everything in it is validated before the first run starts, and every mistake is
reported with the spec's line and the fix. Each finished run appends one row to ``OUT/results.jsonl``; re-running
the same spec skips the runs whose rows are there (same settings), so an interrupted grid resumes where it stopped.
A run writes nothing until it has finished, so an interrupted one simply starts again. The summary, plots and
report are written at the end from the rows (``experiments.report``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..data.labeled import LabeledSet, find_split, read_labeled
from ..data.sampling import stratified_sample
from ..errors import UserError
from ..evaluation.metrics import METRIC_TASK, METRICS, default_metrics
from ..fsutil import write_text
from ..heads.heads import POOLINGS
from ..training.checkpoint import load_config
from ..training.optim import SCHEDULES
from ..transfer import from_pretrained
from . import report
from .report import NO_CHECKPOINT
from .classical import tfidf_linear

DEEP_METHODS = ("scratch", "finetune", "linear-probe", "gradual-unfreeze", "lora")
METHODS = DEEP_METHODS + ("pipeline",)
# 100 labels at batch 32 for 3 epochs are 12 optimizer steps, too few to learn anything, and 67k labels for 3 epochs
# take hours on a CPU: a fixed epoch count would measure under- or over-training rather than the value of labels.
# min_epoch_size: an epoch of a smaller budget repeats its examples (reshuffled) until it holds at least this many.
# max_steps: a cap on optimizer steps per run (large budgets then train for fewer, possibly fractional, epochs).
TRAIN_DEFAULTS = dict(epochs=3, min_epoch_size=0, max_steps=0, lr=5e-5, batch_size=32, max_len=128, weight_decay=0.01, warmup=0.1,
                      schedule="linear", precision="auto")
# Settings a method needs that differ from full fine-tuning. A head alone, or low-rank adapters, need a larger
# learning rate than a whole network; these apply unless the method sets its own (a spec-wide `train: lr`
# is meant for the methods that train every weight).
METHOD_DEFAULTS = {
    "scratch": {},
    "finetune": {},
    "linear-probe": {"lr": 1e-3},
    "gradual-unfreeze": {"lr_decay": 2.6},
    "lora": {"lr": 5e-4, "rank": 8, "alpha": 16.0, "dropout": 0.0},
    "pipeline": {"C": 1.0, "ngram_max": 2, "max_features": 100_000},
}
# Settings that have no default value in the grid (the model's own choice applies unless one is given); kept out of
# TRAIN_DEFAULTS so that a spec without them fingerprints its runs as before they existed.
OPTIONAL_KEYS = ("pooling",)
PIPELINE_KEYS = ("C", "ngram_max", "max_features")
TOP_KEYS = ("name", "checkpoints", "task", "methods", "budgets", "seeds", "train", "out")
TASK_KEYS = ("train", "dev", "text_cols", "label_col", "task", "metric", "metrics")
FLOAT_KEYS = ("lr", "weight_decay", "warmup", "lr_decay", "alpha", "dropout", "C")
INT_KEYS = ("epochs", "min_epoch_size", "max_steps", "batch_size", "max_len", "rank", "ngram_max", "max_features")
RESULTS = "results.jsonl"


# ------------------------------------------------------------------------------------------- YAML with lines


def _construct(node, path: tuple, lines: dict):
    """Plain Python data from a composed YAML node, recording the line of every value under its key path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[key] = _construct(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines) for i, v in enumerate(node.value)]
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def load_yaml(path: str | Path) -> tuple[dict, dict]:
    """Read a YAML spec. Returns (data, lines): ``lines[("task", "metric")]`` is the 1-based line of that entry."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"compare spec '{path}' does not exist. Pass a YAML file (see examples/compare_sst2.yaml).")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: the spec is not valid YAML ({getattr(e, 'problem', e)}). Check the indentation "
                        f"and the quoting on that line.") from None
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text; save the spec as UTF-8.") from None
    lines: dict = {}
    data = _construct(node, (), lines) if node is not None else None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the spec must be a YAML mapping with keys {', '.join(TOP_KEYS)} "
                        f"(see examples/compare_sst2.yaml).")
    return data, lines


# ------------------------------------------------------------------------------------------------ the spec


@dataclass
class Checkpoint:
    name: str
    path: str
    arch: str  # short hash of the backbone architecture: runs with equal arch share one scratch baseline
    tokenizer: str
    summary: str  # e.g. "encoder 4 layers x 256, pretrained as 'mlm'"
    identity: str  # changes when the checkpoint's files change (resume must not mix old and new weights)


@dataclass
class MethodSpec:
    label: str
    method: str
    settings: dict


@dataclass
class CompareSpec:
    """A validated spec. Build it with ``CompareSpec.parse(path_or_dict)``."""

    source: str
    name: str
    checkpoints: list[Checkpoint]
    task: dict  # train, dev, text_cols, label_col, task, metric, metrics
    methods: list[MethodSpec]
    budgets: list[str]  # "100", "all", ... smallest first
    seeds: list[int]
    out: str | None
    train_set: LabeledSet = field(repr=False, default=None)
    dev_set: LabeledSet = field(repr=False, default=None)
    lines: dict = field(repr=False, default_factory=dict)
    budget_sizes: dict = field(default_factory=dict)  # budget name -> number of training examples

    # -- error helpers --
    def _where(self, path: tuple) -> str:
        option = ".".join(str(p) for p in path) or "the spec"
        for k in range(len(path), -1, -1):
            if path[:k] in self.lines:
                return f"{self.source}:{self.lines[path[:k]]}: {option}"
        return f"{self.source}: {option}"

    def error(self, path: tuple, message: str) -> UserError:
        return UserError(f"{self._where(path)}: {message}")

    @classmethod
    def parse(cls, spec: str | Path | dict) -> "CompareSpec":
        """Validate everything a grid needs before anything trains: files, checkpoints, methods, budgets."""
        if isinstance(spec, dict):
            data, lines, source = spec, {}, "spec"
        else:
            data, lines = load_yaml(spec)
            source = str(spec)
        self = cls(source=source, name="", checkpoints=[], task={}, methods=[], budgets=[], seeds=[], out=None,
                   lines=lines)
        self._check_keys(data, (), TOP_KEYS)
        self.name = str(data.get("name") or (Path(source).stem if source != "spec" else "compare"))
        self.out = data.get("out")
        self._parse_task(data.get("task"))
        self._parse_methods(data.get("methods"), data.get("train") or {})
        self._parse_checkpoints(data.get("checkpoints") or [])
        self._parse_budgets(data.get("budgets", ["all"]))
        self._parse_seeds(data.get("seeds", 3))
        return self

    def _check_keys(self, d, path: tuple, allowed) -> None:
        if not isinstance(d, dict):
            raise self.error(path, f"expected a mapping with keys {', '.join(allowed)}, got {type(d).__name__}.")
        for k in d:
            if k not in allowed:
                raise self.error(path + (k,), f"unknown key '{k}'. Allowed here: {', '.join(allowed)}.")

    # -- task --
    def _parse_task(self, task) -> None:
        if task is None:
            raise self.error(("task",), "missing. Add `task:` with at least `train:` and `dev:` (labeled files or "
                                        "GLUE task directories).")
        self._check_keys(task, ("task",), TASK_KEYS)
        for key in ("train", "dev"):
            if not task.get(key):
                raise self.error(("task", key), f"missing. Name the {key} file (.tsv/.csv/.jsonl) or a GLUE "
                                                f"task directory.")
        text_cols = task.get("text_cols")
        if isinstance(text_cols, str):
            text_cols = [text_cols]
        kind = task.get("task")
        if kind is not None and kind not in ("classification", "regression"):
            raise self.error(("task", "task"), f"'{kind}' is not a task; use classification or regression "
                                               f"(or leave it out to infer it from the labels).")
        try:
            train = read_labeled(find_split(task["train"], "train"), text_cols=text_cols,
                                 label_col=task.get("label_col"), task=kind)
            dev = read_labeled(find_split(task["dev"], "dev"), text_cols=text_cols, label_col=task.get("label_col"),
                               task=train.task, label_names=train.label_names)
        except UserError as e:
            raise self.error(("task",), str(e)) from None
        metrics = task.get("metrics") or []
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",")]
        metric = task.get("metric") or (metrics[0] if metrics else default_metrics(train.task, train.num_labels)[0])
        for i, m in enumerate([metric, *metrics]):
            path = ("task", "metric") if i == 0 and task.get("metric") else ("task", "metrics", i - 1)
            if m not in METRICS:
                raise self.error(path, f"unknown metric '{m}'. Known metrics: {', '.join(METRICS)}.")
            if METRIC_TASK[m] != train.task:
                fits = ", ".join(n for n in METRICS if METRIC_TASK[n] == train.task)
                raise self.error(path, f"'{m}' is a {METRIC_TASK[m]} metric but {task['train']} is a "
                                       f"{train.task} task. Use one of: {fits}.")
        metrics = list(dict.fromkeys([metric, *(metrics or default_metrics(train.task, train.num_labels))]))
        self.task = {"train": str(task["train"]), "dev": str(task["dev"]), "text_cols": text_cols,
                     "label_col": task.get("label_col"), "task": train.task, "metric": metric, "metrics": metrics,
                     "label_names": train.label_names, "train_size": len(train), "dev_size": len(dev)}
        self.train_set, self.dev_set = train, dev

    # -- methods --
    def _value(self, path: tuple, key: str, value):
        if key in FLOAT_KEYS:
            try:  # YAML 1.1 reads "1e-4" (no dot) as a string
                value = float(value)
            except (TypeError, ValueError):
                raise self.error(path, f"'{value}' is not a number.") from None
        elif key in INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise self.error(path, f"'{value}' is not a whole number.")
            value = int(value)
        if key in ("epochs", "batch_size", "max_len", "rank", "ngram_max", "max_features", "lr", "C") and value <= 0:
            raise self.error(path, f"must be positive (got {value}).")
        if key in ("min_epoch_size", "max_steps", "weight_decay", "warmup") and value < 0:
            raise self.error(path, f"must not be negative (got {value}).")
        if key == "lr_decay" and value < 1:
            raise self.error(path, f"must be at least 1 (got {value}): each lower layer group gets the LR divided "
                                   f"by it; ULMFiT uses 2.6.")
        if key == "dropout" and not 0 <= value < 1:
            raise self.error(path, f"is a probability in [0, 1) (got {value}).")
        if key == "pooling" and value not in POOLINGS:
            raise self.error(path, f"unknown pooling '{value}'; choose {', '.join(POOLINGS)} (cls: the first token, "
                                   f"BERT's; mean: the average of the real tokens; last: the last real token, GPT's).")
        if key == "schedule":
            if value not in SCHEDULES:
                raise self.error(path, f"unknown schedule '{value}'; choose one of {', '.join(SCHEDULES)}.")
        return value

    def _parse_methods(self, methods, train_defaults) -> None:
        self._check_keys(train_defaults, ("train",), tuple(TRAIN_DEFAULTS) + OPTIONAL_KEYS)
        shared = dict(TRAIN_DEFAULTS)
        for k, v in train_defaults.items():
            shared[k] = self._value(("train", k), k, v)
        if not methods:
            raise self.error(("methods",), f"missing or empty. List some of: {', '.join(METHODS)}.")
        if not isinstance(methods, list):
            raise self.error(("methods",), "must be a list, e.g. `methods: [scratch, finetune, lora]`.")
        for i, entry in enumerate(methods):
            path = ("methods", i)
            if isinstance(entry, str):
                name, overrides = entry, {}
            elif isinstance(entry, dict) and len(entry) == 1:
                name, overrides = next(iter(entry.items()))
                overrides = overrides or {}
                path = path + (name,)
            else:
                raise self.error(path, "each method is a name (`- lora`) or a name with settings "
                                       "(`- lora: {rank: 4}`).")
            if name not in METHODS:
                raise self.error(path, f"unknown method '{name}'. Choose one of: {', '.join(METHODS)}.")
            own = tuple(METHOD_DEFAULTS[name])
            network_keys = tuple(TRAIN_DEFAULTS) + OPTIONAL_KEYS + own
            allowed = (PIPELINE_KEYS if name == "pipeline" else network_keys) + ("label",)
            self._check_keys(overrides, path, allowed)
            settings = {} if name == "pipeline" else dict(shared)
            settings.update(METHOD_DEFAULTS[name])
            for k, v in overrides.items():
                if k != "label":
                    settings[k] = self._value(path + (k,), k, v)
            label = str(overrides.get("label") or name)
            if any(m.label == label for m in self.methods):
                raise self.error(path, f"method '{label}' is listed twice. Give the second one its own "
                                       f"`label:` (e.g. `- lora: {{rank: 4, label: lora-r4}}`).")
            self.methods.append(MethodSpec(label, name, settings))

    # -- checkpoints --
    def _parse_checkpoints(self, entries) -> None:
        needs = [m.label for m in self.methods if m.method != "pipeline"]
        if not isinstance(entries, list):
            entries = [entries]
        if needs and not entries:
            raise self.error(("checkpoints",), f"methods {', '.join(needs)} need a pretrained checkpoint. Add "
                                               f"`checkpoints: [runs/NAME/final]` (a `transferlab pretrain` output).")
        first_tokenizer = None
        for i, entry in enumerate(entries):
            path_key = ("checkpoints", i)
            if isinstance(entry, dict):
                self._check_keys(entry, path_key, ("name", "path"))
                path, name = entry.get("path"), entry.get("name")
            else:
                path, name = entry, None
            if not path:
                raise self.error(path_key, "needs a path (`- runs/NAME/final` or `- {name: mlm, path: ...}`).")
            directory = Path(str(path))
            if not (directory / "config.json").is_file():
                raise self.error(path_key, f"'{directory}' is not a checkpoint directory (no config.json). Pass the "
                                           f"`final/` directory of a `transferlab pretrain` run.")
            try:
                config = load_config(directory)
            except UserError as e:
                raise self.error(path_key, str(e)) from None
            name = str(name or (directory.parent.name if directory.name == "final" else directory.name))
            if any(c.name == name for c in self.checkpoints):
                raise self.error(path_key, f"two checkpoints are called '{name}'. Write them as "
                                           f"`- {{name: SOMETHING, path: ...}}` with different names.")
            tokenizer = config.get("tokenizer_sha256") or _sha256(directory / "tokenizer.json")
            if first_tokenizer is None:
                first_tokenizer = tokenizer
            elif tokenizer != first_tokenizer:
                first = self.checkpoints[0]
                raise self.error(path_key, f"checkpoint '{name}' uses a different tokenizer than '{first.name}' "
                                           f"({self._where(('checkpoints', 0))}). Compared checkpoints must share "
                                           f"one tokenizer, or the comparison measures the tokenizers; pretrain "
                                           f"both from the same `transferlab tokenizer train` output, or compare "
                                           f"them in separate specs.")
            backbone = {k: v for k, v in config["backbone"].items() if k != "dropout"}
            arch = hashlib.sha256(json.dumps(backbone, sort_keys=True).encode()).hexdigest()[:10]
            weights = directory / "model.safetensors"
            identity = _sha256_text(json.dumps([config, _sha256(weights)], sort_keys=True))
            summary = (f"{backbone['family']} {backbone['n_layer']} layers x {backbone['d_model']}, "
                       f"pretrained as '{config.get('task', {}).get('kind', '?')}'")
            self.checkpoints.append(Checkpoint(name, str(directory), arch, tokenizer, summary, identity))

    # -- budgets and seeds --
    def _parse_budgets(self, budgets) -> None:
        if not isinstance(budgets, list):
            budgets = [budgets]
        if not budgets:
            raise self.error(("budgets",), "is empty. List label budgets, e.g. `budgets: [100, 300, 1000, all]`.")
        n = len(self.train_set)
        k = self.train_set.num_labels if self.train_set.task == "classification" else 1
        sizes = {}
        for i, b in enumerate(budgets):
            path = ("budgets", i)
            if b == "all":
                sizes["all"] = n
                continue
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise self.error(path, f"'{b}' is not a label budget; use a positive whole number or 'all'.")
            if b > n:
                raise self.error(path, f"budget {b} is larger than the training set ({self.task['train']} has {n} "
                                       f"examples). Use at most {n}, or 'all'.")
            if b < k:
                raise self.error(path, f"budget {b} cannot hold one example of each of the {k} classes that "
                                       f"stratified sampling keeps; use at least {k}.")
            sizes[str(b)] = b
        # smallest first; "all" equal to a number is kept once, as "all"
        by_size = {}
        for name, size in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0] != "all")):
            by_size.setdefault(size, name)
        self.budgets = list(by_size.values())
        self.budget_sizes = {name: size for size, name in by_size.items()}

    def _parse_seeds(self, seeds) -> None:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise self.error(("seeds",), f"needs at least 1 seed (got {seeds}); 3 or more show the spread.")
            self.seeds = list(range(seeds))
        elif isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            self.seeds = list(dict.fromkeys(seeds))
        else:
            raise self.error(("seeds",), f"'{seeds}' is neither a number of seeds (3) nor a list of seeds "
                                         f"([0, 1, 2]).")

    # -- the grid --
    def plan(self) -> list["Run"]:
        """Every run of the grid, smallest budget first. Scratch runs once per distinct architecture, the
        pipeline once (it uses no checkpoint)."""
        scratch_for = {}
        for c in self.checkpoints:
            scratch_for.setdefault(c.arch, c)
        runs = []
        data_id = _sha256_text(json.dumps([self.task, _file_id(self.train_set.source),
                                           _file_id(self.dev_set.source)], sort_keys=True))
        for budget in self.budgets:
            for seed in self.seeds:
                for m in self.methods:
                    if m.method == "pipeline":
                        targets = [None]
                    elif m.method == "scratch":
                        targets = list(scratch_for.values())
                    else:
                        targets = self.checkpoints
                    for c in targets:
                        settings = {"method": m.method, **m.settings}
                        fingerprint = _sha256_text(json.dumps(
                            [settings, data_id, c.identity if c else None, c.arch if c else None,
                             self.budget_sizes[budget], seed], sort_keys=True))[:16]
                        runs.append(Run(c.name if c else NO_CHECKPOINT, m, budget, self.budget_sizes[budget], seed,
                                        c, fingerprint))
        return runs

    def describe(self) -> dict:
        """The setup, as plain data for results and reports."""
        return {"name": self.name, "spec": self.source, "task": {k: v for k, v in self.task.items()},
                "checkpoints": [c.__dict__ for c in self.checkpoints],
                "methods": [{"label": m.label, "method": m.method, "settings": m.settings} for m in self.methods],
                "budgets": self.budgets, "budget_sizes": self.budget_sizes, "seeds": self.seeds,
                "class_counts": _class_counts(self.train_set), "dev_class_counts": _class_counts(self.dev_set)}


@dataclass
class Run:
    checkpoint: str
    method: MethodSpec
    budget: str
    budget_size: int
    seed: int
    source: Checkpoint | None
    fingerprint: str

    @property
    def key(self) -> tuple:
        return (self.checkpoint, self.method.label, self.budget, self.seed)

    def cost(self, dev_size: int) -> float:
        """Rough relative cost for the ETA: examples seen, counting a dev pass per epoch at a third of a training
        pass (no backward) and model set-up as 50 examples; the pipeline is nearly free."""
        if self.method.method == "pipeline":
            return 0.02 * self.budget_size
        repeats, epochs = epoch_plan(self.method.settings, self.budget_size)
        return 50 + epochs * (repeats * self.budget_size + dev_size / 3)


def epoch_plan(settings: dict, n_examples: int) -> tuple[int, float]:
    """How often each example appears per epoch (``min_epoch_size``) and how many epochs to train (``epochs``,
    cut short by ``max_steps``). Returns (repeats, epochs)."""
    repeats = max(1, -(-settings.get("min_epoch_size", 0) // n_examples))
    epochs = float(settings["epochs"])
    if settings.get("max_steps"):
        steps_per_epoch = -(-repeats * n_examples // settings["batch_size"])
        epochs = min(epochs, settings["max_steps"] / steps_per_epoch)
    return repeats, epochs


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_id(path: str) -> list:
    # By content, not modification time: a copied, restored or re-mounted dataset must not make a finished grid
    # train again (hashing is a fraction of a second next to one fine-tuning run).
    return [str(path), _sha256(Path(path))]


def _class_counts(data: LabeledSet) -> dict | None:
    if data.task != "classification":
        return None
    counts = np.bincount(np.asarray(data.labels), minlength=data.num_labels)
    return {name: int(n) for name, n in zip(data.label_names, counts)}


# ------------------------------------------------------------------------------------------------ one run


def run_one(spec: CompareSpec, run: Run) -> dict:
    """Train and evaluate one cell of the grid; return its results row."""
    train_all, dev, task = spec.train_set, spec.dev_set, spec.task
    idx = stratified_sample(train_all.labels, run.budget_size, run.seed, train_all.task)
    train = train_all.subset(idx)
    s = run.method.settings
    start = time.perf_counter()
    if run.method.method == "pipeline":
        metrics, trained = tfidf_linear(train, dev, task["metrics"], seed=run.seed, C=s["C"],
                                        ngram_max=s["ngram_max"], max_features=s["max_features"])
        epochs = [{"epoch": 1, **metrics}]
    else:
        init = "scratch" if run.method.method == "scratch" else "pretrained"
        model = from_pretrained(run.source.path, task=train.task, num_labels=train.num_labels,
                                label_names=train.label_names, init=init, seed=run.seed, max_len=s["max_len"],
                                pooling=s.get("pooling"), verbose=False)
        method = "finetune" if run.method.method == "scratch" else run.method.method
        options = {"lora": {"lora_rank": s.get("rank"), "lora_alpha": s.get("alpha"), "lora_dropout": s.get("dropout")},
                   "gradual-unfreeze": {"lr_decay": s.get("lr_decay")}}.get(method)
        model.compile(lr=s["lr"], metrics=task["metrics"], weight_decay=s["weight_decay"], warmup=s["warmup"],
                      schedule=s["schedule"], precision=s["precision"], method=method, method_options=options)
        repeats, n_epochs = epoch_plan(s, len(train))
        fit_set = train.subset(np.tile(np.arange(len(train)), repeats)) if repeats > 1 else train
        history = model.fit(fit_set, validation_data=dev, epochs=n_epochs, batch_size=s["batch_size"],
                            seed=run.seed, verbose=False).history
        n = len(history["val_loss"])
        epochs = [{"epoch": round(min(e + 1, n_epochs), 4), "train_loss": history["loss"][e],
                   **{k[4:]: history[k][e] for k in history if k.startswith("val_")}} for e in range(n)]
        trained = max(history["trainable_params"])
    best = int(np.argmax([e[task["metric"]] for e in epochs]))
    return {"checkpoint": run.checkpoint, "method": run.method.label, "kind": run.method.method,
            "budget": run.budget, "budget_size": run.budget_size, "seed": run.seed,
            "arch": run.source.arch if run.source else None, "metric": task["metric"],
            "final": epochs[-1], "best_epoch": best + 1, "best": epochs[best], "epochs": epochs,
            "trained_params": int(trained), "train_examples": len(train),
            "wall_s": round(time.perf_counter() - start, 3), "fingerprint": run.fingerprint}


# ------------------------------------------------------------------------------------------------ results log


def read_results(path: Path) -> list[dict]:
    """Rows of results.jsonl; a torn last line (a crash mid-write) is dropped and the file repaired."""
    if not path.is_file():
        return []
    rows, good = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "fingerprint" in row:
            rows.append(row)
            good.append(line)
    text = "".join(g + "\n" for g in good)
    if text != path.read_text(encoding="utf-8"):
        write_text(path, text)
    return rows


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------ the grid


def default_out(spec: CompareSpec) -> Path:
    return Path(spec.out) if spec.out else Path("runs") / "compare" / spec.name


def run_compare(spec_or_path: str | Path | dict | CompareSpec, out: str | Path | None = None,
                progress: bool = True) -> dict:
    """Run (or resume) a comparison grid and write its results, summary, plots and report.

    Args:
        spec_or_path: a YAML spec path, the same data as a dict, or a parsed ``CompareSpec``.
        out: the output directory (default: the spec's ``out:``, else runs/compare/NAME).
        progress: show the runs-done / ETA bar and a line per finished run.
    Returns:
        {"rows": the results rows of this spec, "summary": summary rows, "conclusion": paragraphs,
         "files": written paths, "ran": runs trained now, "skipped": runs found finished}.
    """
    spec = spec_or_path if isinstance(spec_or_path, CompareSpec) else CompareSpec.parse(spec_or_path)
    out = Path(out) if out is not None else default_out(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory for the comparison's results.")
    results_path = out / RESULTS
    if out.is_dir() and any(out.iterdir()) and not results_path.is_file():
        raise UserError(f"'{out}' already holds files but no {RESULTS}, so it is not a comparison to resume. "
                        f"Choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    plan = spec.plan()
    done = {}
    for row in read_results(results_path):
        done[(row["checkpoint"], row["method"], row["budget"], row["seed"], row["fingerprint"])] = row
    todo = [r for r in plan if r.key + (r.fingerprint,) not in done]
    pending = {id(r) for r in todo}
    ignored = len(done) - (len(plan) - len(todo))
    if todo:
        # The old report no longer describes the results once new runs land: remove it now, write it again at the end.
        report.remove_outputs(out)
    say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if progress else (lambda msg: None)
    if done:
        say(f"resuming {out}: {len(plan) - len(todo)} of {len(plan)} runs already finished"
            + (f"; {ignored} rows from other settings are kept in {RESULTS} but left out" if ignored else ""))
    dev_size = len(spec.dev_set)
    # The bar advances by estimated cost, so the ETA weighs a 67k-example run above a 100-example one.
    bar = tqdm(total=sum(r.cost(dev_size) for r in plan),
               initial=sum(r.cost(dev_size) for r in plan if id(r) not in pending),
               disable=not progress, file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    finished = len(plan) - len(todo)
    for run in todo:
        bar.set_description_str(f"runs {finished}/{len(plan)} (now {run.method.label} @ {run.budget}, "
                                f"seed {run.seed})")
        row = run_one(spec, run)
        _append(results_path, row)
        done[run.key + (run.fingerprint,)] = row
        finished += 1
        bar.update(run.cost(dev_size))
        say(f"  {run.checkpoint} {run.method.label:>16} budget {run.budget:>5} seed {run.seed}: "
            f"{row['metric']} {row['final'][row['metric']]:.4f} ({row['wall_s']:.1f} s)")
    bar.set_description_str(f"runs {finished}/{len(plan)}")
    bar.close()
    rows = [done[r.key + (r.fingerprint,)] for r in plan]
    written = report.write_all(out, spec.describe(), rows)
    if progress:
        print(written["table"])
        print()
        print("\n\n".join(written["conclusion"]))
        print(f"\nwrote {out / RESULTS}, {', '.join(p.name for p in written['files'])} in {out}")
    return {"rows": rows, "summary": written["summary"], "conclusion": written["conclusion"],
            "files": written["files"], "ran": len(todo), "skipped": len(plan) - len(todo)}
