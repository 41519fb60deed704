"""`transferlab compare SPEC.yaml`: transfer methods x label budgets x seeds, and a report people want to read.

The spec (YAML) names the pretrained checkpoints, the task, the methods, the label budgets and the seeds; see
``examples/compare_sst2.yaml`` (text) and ``examples/compare_pneumonia.yaml`` (images). Everything in it is
validated before the first run starts, and every mistake is reported with the spec's line and the fix. This module
is the compare-specific part: reading the spec (``CompareSpec``, on ``spec.SpecReader``), planning the runs and
running one cell (``run_one``); ``grid.run_grid`` runs and resumes them, ``report`` writes the summary, plots and
report from the rows.

The kind of input is read from the checkpoints (or, for a pipeline-only grid, from the data): text tasks read
labeled files with text columns and compare against TF-IDF + logistic regression; image tasks read image sets
(idx, .npz, class folders, CSV) and compare against HOG + logistic regression; audio tasks read clips (class
folders, CSV) as log-mel features with the checkpoints' mel settings and compare against MFCC statistics + logistic
regression. With a ``test:`` split, every
network run keeps the weights of its best dev epoch and the report's headline is the test metric of those weights
(select on dev, report on test).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..data.labeled import ReadOptions, label_warnings
from ..data.sampling import stratified_sample
from ..errors import UserError
from ..evaluation.metrics import METRIC_TASK, METRICS, compute_metrics, default_metrics
from ..fsutil import ProvisionalDir
from ..options import SettingError, check_value
from ..inputs import data_modality, modality
from ..tasks.factory import image_adaptation
from ..training.checkpoint import load_config
from ..transfer import from_pretrained
from . import report
from .executors import ExecutorConfig
from .grid import RESULTS, read_results, run_grid
from .grid_settings import GridSettings, ImageGridSettings
from .report import NO_CHECKPOINT
from .spec import SpecReader, read_spec

DEEP_METHODS = ("scratch", "finetune", "linear-probe", "gradual-unfreeze", "lora", "intermediate")
# kNN on the frozen backbone's features trains nothing (evaluation.protocols): the self-supervised literature's
# second protocol beside the linear probe, and a lower bound on what the features hold without any fitting.
# logistic-probe fits scikit-learn's logistic regression to the same frozen features (the other linear-probe recipe,
# beside linear-probe's trained linear layer), its C chosen on dev from LOGISTIC_CS unless the spec sets one.
METHODS = DEEP_METHODS + ("knn", "logistic-probe", "pipeline")
FROZEN = ("knn", "logistic-probe")  # methods that read the frozen backbone's features and train no network
UNTRAINED = FROZEN + ("pipeline",)  # methods that take none of the training settings
LOGISTIC_CS = (0.01, 0.1, 1.0, 10.0)


# The defaults a spec's runs start from (their keys and values are part of every run's fingerprint, so a key is
# added here only with care: a finished grid would otherwise train again).
TRAIN_DEFAULTS = {k: GridSettings.defaults()[k] for k in (
    "epochs", "min_epoch_size", "max_steps", "lr", "batch_size", "max_len", "weight_decay", "warmup", "schedule",
    "precision")}
IMAGE_TRAIN_DEFAULTS = {k: ImageGridSettings.defaults()[k] for k in (
    "epochs", "min_epoch_size", "max_steps", "lr", "batch_size", "weight_decay", "warmup", "schedule", "precision",
    "augment")}
# Settings a method needs that differ from full fine-tuning. A head alone, or low-rank adapters, need a larger
# learning rate than a whole network; these apply unless the method sets its own (a spec-wide `train: lr`
# is meant for the methods that train every weight).
METHOD_DEFAULTS = {
    "scratch": {},
    "finetune": {},
    "linear-probe": {"lr": 1e-3},
    "gradual-unfreeze": {"lr_decay": 2.6},
    "lora": {"lr": 5e-4, "rank": 8, "alpha": 16.0, "dropout": 0.0},
    "knn": {"k": 20, "temperature": 0.07},  # solo-learn's and lightly's weighted kNN
    "logistic-probe": {"C": None},  # None: each of LOGISTIC_CS, the best on dev
    # Intermediate-task transfer (Phang et al. 2018's STILTs; Pruksachatkun et al. 2020): fine-tune on a labeled
    # source task first (`source:` its train file and columns), then fine-tune that model on the target.
    "intermediate": {"source": None, "source_epochs": 1.0, "source_lr": 0.0, "source_max": 0},
    "pipeline": {"C": 1.0, "ngram_max": 2, "max_features": 100_000},
}
# The image pipeline is HOG (Dalal & Triggs 2005) + logistic regression; pixels_per_cell is a square cell's side.
IMAGE_PIPELINE_DEFAULTS = {"C": 1.0, "orientations": 9, "pixels_per_cell": 4, "cells_per_block": 2}
# Audio: a small transformer trains from scratch or fine-tunes at AdamW's 1e-3 (as images), for more epochs than
# text (a spoken-word set is small); the pipeline is MFCC statistics + logistic regression.
AUDIO_TRAIN_DEFAULTS = dict(epochs=20, min_epoch_size=0, max_steps=0, lr=1e-3, batch_size=32, weight_decay=0.01,
                            warmup=0.1, schedule="linear", precision="auto")
AUDIO_PIPELINE_DEFAULTS = {"C": 1.0, "n_mfcc": 13}
# Settings that have no default value in the grid (the model's own choice applies unless one is given); kept out of
# TRAIN_DEFAULTS so that a spec without them fingerprints its runs as before they existed.
OPTIONAL_KEYS = ("pooling", "eval_every_epochs", "eval_sample")
TOP_KEYS = ("name", "checkpoints", "task", "methods", "budgets", "seeds", "train", "out")
# Reading options (data.labeled.ReadOptions) and the label check, besides the files and the metric.
READ_KEYS = ("header", "format", "encoding", "coarse_labels")
TASK_KEYS = ("train", "dev", "test", "text_cols", "label_col", "task", "metric", "metrics", "image_size", "path_col",
             *READ_KEYS, "strict_labels")
TEXT_TASK_KEYS = ("text_cols", *READ_KEYS)
IMAGE_TASK_KEYS = ("image_size", "path_col")
MODALITY_TASK_KEYS = {"text": TEXT_TASK_KEYS, "image": IMAGE_TASK_KEYS, "audio": ("path_col",)}
# How a spec names the reading options, for the readers' messages.
SPEC_FLAGS = {"text_cols": "task.text_cols", "label_col": "task.label_col", "header": "`header: false` under task",
              "format": "task.format", "encoding": "task.encoding", "skip_bad_rows": None, "label_names": None}
FLOAT_KEYS = ("lr", "weight_decay", "warmup", "lr_decay", "alpha", "dropout", "C", "temperature", "source_epochs",
              "source_lr")
INT_KEYS = ("epochs", "min_epoch_size", "max_steps", "batch_size", "max_len", "rank", "ngram_max", "max_features",
            "orientations", "pixels_per_cell", "cells_per_block", "eval_every_epochs", "eval_sample", "k", "n_mfcc",
            "source_max")
SOURCE_KEYS = ("train", "text_cols", "label_col", "task", "image_size", "path_col")


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
class CompareSpec(SpecReader):
    """A validated spec. Build it with ``CompareSpec.parse(path_or_dict)``."""

    source: str
    name: str
    checkpoints: list[Checkpoint]
    task: dict  # train, dev, text_cols, label_col, task, metric, metrics (+ test; + modality, image_size)
    methods: list[MethodSpec]
    budgets: list[str]  # "100", "all", ... smallest first
    seeds: list[int]
    out: str | None
    modality: str = "text"
    train_set: object = field(repr=False, default=None)  # a LabeledSet (text) or an ImageSet
    dev_set: object = field(repr=False, default=None)
    test_set: object = field(repr=False, default=None)
    lines: dict = field(repr=False, default_factory=dict)
    budget_sizes: dict = field(default_factory=dict)  # budget name -> number of training examples
    mel: object = field(repr=False, default=None)  # audio: the checkpoints' MelSettings, which every split is read with
    task_entry: dict = field(repr=False, default_factory=dict)  # the spec's `task:` as written (workers re-read it)

    @classmethod
    def parse(cls, spec: str | Path | dict) -> "CompareSpec":
        """Validate everything a grid needs before anything trains: files, checkpoints, methods, budgets."""
        data, lines, source = read_spec(spec, TOP_KEYS, "examples/compare_sst2.yaml")
        self = cls(source=source, name="", checkpoints=[], task={}, methods=[], budgets=[], seeds=[], out=None,
                   lines=lines)
        self._check_keys(data, (), TOP_KEYS)
        self.name = str(data.get("name") or (Path(source).stem if source != "spec" else "compare"))
        self.out = data.get("out")
        self.modality = self._modality(data.get("checkpoints") or [], data.get("task"))
        self._parse_task(data.get("task"))
        self._parse_methods(data.get("methods"), data.get("train") or {})
        self._parse_checkpoints(data.get("checkpoints") or [])
        self._parse_budgets(data.get("budgets", ["all"]))
        self._parse_seeds(data.get("seeds", 3))
        return self

    def _modality(self, checkpoints, task) -> str:
        """The checkpoints' modality (they must agree); without checkpoints, what the training data holds."""
        found = {}
        for i, entry in enumerate(checkpoints if isinstance(checkpoints, list) else [checkpoints]):
            path = entry.get("path") if isinstance(entry, dict) else entry
            if path and (Path(str(path)) / "config.json").is_file():
                try:
                    found.setdefault(modality(load_config(path)), i)
                except UserError:
                    continue  # reported with its line when the checkpoints are parsed
        if len(found) > 1:
            (a, i), (b, j) = sorted(found.items(), key=lambda kv: kv[1])[:2]
            raise self.error(("checkpoints", j), f"is a {b} model but checkpoint {i} "
                                                 f"({self._where(('checkpoints', i))}) is a {a} model; one grid "
                                                 f"compares checkpoints of one kind of input. Split the spec.")
        if found:
            kind = next(iter(found))
        else:
            train = task.get("train") if isinstance(task, dict) else None
            kind = (data_modality(train) if train else None) or "text"
        if kind == "audio":
            self.mel = _audio_settings(checkpoints if isinstance(checkpoints, list) else [checkpoints])
        return kind

    # -- task --
    def _parse_task(self, task) -> None:
        if task is None:
            raise self.error(("task",), "missing. Add `task:` with at least `train:` and `dev:` (labeled files or "
                                        "GLUE task directories).")
        self._check_keys(task, ("task",), TASK_KEYS)
        mine = MODALITY_TASK_KEYS[self.modality]
        wrong = [k for k in task if k not in mine and any(k in keys for keys in MODALITY_TASK_KEYS.values())]
        if wrong:
            owner = next(m for m, keys in MODALITY_TASK_KEYS.items() if wrong[0] in keys)
            raise self.error(("task", wrong[0]), f"applies to {owner} tasks; this grid's checkpoints read "
                                                 f"{self.modality}.")
        for key in ("train", "dev"):
            if not task.get(key):
                raise self.error(("task", key), f"missing. Name the {key} file (.tsv/.csv/.jsonl) or a GLUE "
                                                f"task directory.")
        text_cols = task.get("text_cols")
        for key in ("text_cols", "label_col"):  # `text_cols: [3]` for a headerless file: positions as names
            if task.get(key) is not None:
                try:
                    value = check_value(ReadOptions, key, task[key], from_text=True)
                except SettingError as e:
                    raise self.error(("task", key), e.problem) from None
                text_cols = value if key == "text_cols" else text_cols
                if key == "label_col":
                    task = {**task, "label_col": value}
        kind = task.get("task")
        if kind is not None and kind not in ("classification", "regression"):
            raise self.error(("task", "task"), f"'{kind}' is not a task; use classification or regression "
                                               f"(or leave it out to infer it from the labels).")
        if self.modality != "text" and kind not in (None, "classification"):
            raise self.error(("task", "task"), f"{self.modality} tasks are classification (got '{kind}').")
        read = {}
        for key in READ_KEYS:
            if key in task:
                try:
                    read[key] = check_value(ReadOptions, key, task[key], from_text=True)
                except SettingError as e:
                    raise self.error(("task", key), e.problem) from None
        strict = False
        if "strict_labels" in task:
            from ..recipes.settings import FinetuneConfig

            try:
                strict = check_value(FinetuneConfig, "strict_labels", task["strict_labels"], from_text=True)
            except SettingError as e:
                raise self.error(("task", "strict_labels"), e.problem) from None
        train, dev, test = self._read_splits(task, text_cols, kind, read)
        # As written, with columns as validated (a worker re-reads the files from it).
        self.task_entry = {**task, **({"text_cols": text_cols} if text_cols is not None else {})}
        suspicious = label_warnings(train, dev, flags=SPEC_FLAGS)
        if suspicious and strict:
            raise self.error(("task", "strict_labels"), " ".join(f"{w}." for w in suspicious) + " (strict_labels "
                                                                                                 "refuses such data.)")
        for warning in suspicious:
            print(f"warning: {self._where(('task', 'train'))}: {warning} (`strict_labels: true` refuses such data).",
                  file=sys.stderr)
        metrics = task.get("metrics") or []
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",")]
        metric = task.get("metric") or (metrics[0] if metrics else default_metrics(train.task, train.num_labels, self.modality)[0])
        for i, m in enumerate([metric, *metrics]):
            path = ("task", "metric") if i == 0 and task.get("metric") else ("task", "metrics", i - 1)
            if m not in METRICS:
                raise self.error(path, f"unknown metric '{m}'. Known metrics: {', '.join(METRICS)}.")
            if METRIC_TASK[m] != train.task:
                fits = ", ".join(n for n in METRICS if METRIC_TASK[n] == train.task)
                raise self.error(path, f"'{m}' is a {METRIC_TASK[m]} metric but {task['train']} is a "
                                       f"{train.task} task. Use one of: {fits}.")
        metrics = list(dict.fromkeys([metric, *(metrics or default_metrics(train.task, train.num_labels, self.modality))]))
        self.task = {"train": str(task["train"]), "dev": str(task["dev"]), "text_cols": text_cols,
                     "label_col": task.get("label_col"), "task": train.task, "metric": metric, "metrics": metrics,
                     "label_names": train.label_names, "train_size": len(train), "dev_size": len(dev)}
        # Keys a text spec did not have before are added only when used, so its runs keep their fingerprints.
        if test is not None:
            self.task.update(test=str(task["test"]), test_size=len(test))
        if self.modality == "image":
            self.task.update(modality="image", image_size=list(train.size), path_col=task.get("path_col"))
        if self.modality == "audio":
            self.task.update(modality="audio", mel=train.settings.to_dict(), path_col=task.get("path_col"))
        self.task.update(read)  # only the reading options the spec gives: other specs keep their fingerprints
        self.train_set, self.dev_set, self.test_set = train, dev, test

    def _read_splits(self, task: dict, text_cols, kind, options: dict):
        """(train, dev, test or None) read the way the grid's modality reads them; a directory or .npz holding
        several splits gives each key its own (train, val/dev, test)."""
        try:
            if self.modality == "image":
                from ..data.images import read_images

                size = task.get("image_size")
                if size is not None:
                    size = (size, size) if isinstance(size, int) else tuple(size)

                def read(key, split, names=None):
                    return read_images(task[key], split, label_names=names, resize=size,
                                       label_col=task.get("label_col"), path_col=task.get("path_col"))
            elif self.modality == "audio":
                from ..data.audio import read_audio

                def read(key, split, names=None):
                    return read_audio(task[key], split, settings=self.mel, label_names=names,
                                      label_col=task.get("label_col"), path_col=task.get("path_col"))
            else:
                from ..data.labeled import FILES_PER_CLASS, find_split, read_labeled

                def read(key, split, names=None):
                    path = task[key] if options.get("format") == FILES_PER_CLASS else find_split(task[key], split)
                    data = read_labeled(path, text_cols=text_cols, label_col=task.get("label_col"),
                                        task=train.task if names else kind, label_names=names, flags=SPEC_FLAGS,
                                        **options)
                    for note in data.notes:
                        print(f"note: {note}", file=sys.stderr)
                    return data
            train = read("train", "train")
            dev = read("dev", "dev", train.label_names)
            test = read("test", "test", train.label_names) if task.get("test") else None
        except UserError as e:
            raise self.error(("task",), str(e)) from None
        return train, dev, test

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
        settings = ImageGridSettings if self.modality == "image" else GridSettings
        if key in {f.name for f in fields(settings)}:
            # A training setting: the ranges and choices the command line and Python check, from one declaration.
            try:
                check_value(settings, key, value, from_text=True)
            except SettingError as e:
                raise self.error(path, e.problem) from None
        if key in ("rank", "ngram_max", "max_features", "C", "k", "temperature") and value <= 0:
            raise self.error(path, f"must be positive (got {value}).")
        if key == "lr_decay" and value < 1:
            raise self.error(path, f"must be at least 1 (got {value}): each lower layer group gets the LR divided "
                                   f"by it; ULMFiT uses 2.6.")
        if key == "dropout" and not 0 <= value < 1:
            raise self.error(path, f"is a probability in [0, 1) (got {value}).")
        self._check_training_choice(path, key, value)
        if key in ("orientations", "pixels_per_cell", "cells_per_block", "n_mfcc") and value < 1:
            raise self.error(path, f"must be positive (got {value}).")
        if key == "source_epochs" and value <= 0:
            raise self.error(path, f"must be positive (got {value}).")
        if key in ("source_lr", "source_max") and value < 0:
            raise self.error(path, f"must not be negative (got {value}; 0 means the target's lr / every example).")
        if key == "source":
            value = self._source_task(path, value)
        return value

    def _source_task(self, path: tuple, source) -> dict:
        """An intermediate method's source task, read once now so a bad file or column stops the grid here."""
        if not isinstance(source, dict) or not source.get("train"):
            raise self.error(path, "the intermediate task: `source: {train: FILE, ...}` (and text_cols, label_col, "
                                   "task as for the target).")
        self._check_keys(source, path, SOURCE_KEYS)
        found = data_modality(source["train"]) if Path(str(source["train"])).exists() else None
        if found is not None and found != self.modality:
            raise self.error(path + ("train",), f"holds {found} data but the grid's checkpoints read {self.modality}.")
        try:
            data = read_source_task(source, self.modality)
        except UserError as e:
            raise self.error(path + ("train",), str(e)) from None
        # Its file's content joins the run's fingerprint, as the target's files do.
        return {**source, "file": _file_id(data.source)}

    def _parse_methods(self, methods, train_defaults) -> None:
        defaults = {"image": IMAGE_TRAIN_DEFAULTS, "audio": AUDIO_TRAIN_DEFAULTS}.get(self.modality, TRAIN_DEFAULTS)
        self._check_keys(train_defaults, ("train",), tuple(defaults) + OPTIONAL_KEYS)
        shared = dict(defaults)
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
            if name == "intermediate" and not overrides.get("source"):
                raise self.error(path, "intermediate needs its source task: `- intermediate: {source: {train: FILE}}`"
                                       " (e.g. STS-B before MRPC).")
            own = self._method_defaults(name)
            network_keys = tuple(defaults) + OPTIONAL_KEYS + tuple(own)
            allowed = (tuple(own) if name in UNTRAINED else network_keys) + ("label",)
            self._check_keys(overrides, path, allowed)
            if name in FROZEN and self.train_set.task != "classification":
                raise self.error(path, f"{name} is a classifier; {self.task['train']} is a {self.train_set.task} "
                                       f"task. Drop {name}, or compare on a classification task.")
            settings = {} if name in UNTRAINED else dict(shared)
            settings.update(own)
            for k, v in overrides.items():
                if k != "label":
                    settings[k] = self._value(path + (k,), k, v)
            label = str(overrides.get("label") or name)
            if any(m.label == label for m in self.methods):
                raise self.error(path, f"method '{label}' is listed twice. Give the second one its own "
                                       f"`label:` (e.g. `- lora: {{rank: 4, label: lora-r4}}`).")
            self.methods.append(MethodSpec(label, name, settings))

    def _method_defaults(self, name: str) -> dict:
        if name == "pipeline" and self.modality == "image":
            return IMAGE_PIPELINE_DEFAULTS
        if name == "pipeline" and self.modality == "audio":
            return AUDIO_PIPELINE_DEFAULTS
        return METHOD_DEFAULTS[name]

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
            if self.modality in ("image", "audio"):  # each model reads its data through its own normalisation
                tokenizer = ""
            if self.modality == "audio":
                settings = (config.get("inputs") or {}).get("settings")
                if settings != self.mel.to_dict():
                    raise self.error(path_key, f"checkpoint '{name}' computes its features with other mel settings "
                                               f"({settings}) than the first checkpoint ({self.mel.to_dict()}); "
                                               f"one grid reads its clips once. Compare them in separate specs.")
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
            summary = f"{_architecture(backbone)}, pretrained as '{config.get('task', {}).get('kind', '?')}'"
            if "lora" in (m.method for m in self.methods) and backbone["family"] in ("resnet", "rnn", "embedding"):
                where = next(i for i, m in enumerate(self.methods) if m.method == "lora")
                raise self.error(("methods", where), f"lora adapts the attention and MLP layers of transformer "
                                                     f"blocks; checkpoint '{name}' is a {backbone['family']} "
                                                     f"({self._where(path_key)}), which has none. Drop lora, or "
                                                     f"compare a transformer (ViT) checkpoint.")
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
        data_id = _sha256_text(json.dumps([self.task, *self.data_files()], sort_keys=True))
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
                                        c, fingerprint, len(self.dev_set)))
        return runs

    def data_files(self) -> list[list]:
        """[path, sha256] of the files the splits were read from (train, dev, then test if any)."""
        return [_file_id(d.source) for d in (self.train_set, self.dev_set, self.test_set) if d is not None]

    def paths(self) -> list[str]:
        """Every file and directory a run reads, absolute: the data as the spec names it, the files the splits
        were read from, and the checkpoint directories."""
        named = [self.task_entry[k] for k in ("train", "dev", "test") if self.task_entry.get(k)]
        sources = [d.source for d in (self.train_set, self.dev_set, self.test_set) if d is not None]
        found = [*named, *sources, *(c.path for c in self.checkpoints)]
        return list(dict.fromkeys(os.path.abspath(str(p)) for p in found))

    def describe(self) -> dict:
        """The setup, as plain data for results and reports."""
        return {"name": self.name, "spec": self.source, "task": {k: v for k, v in self.task.items()},
                "checkpoints": [c.__dict__ for c in self.checkpoints],
                "methods": [{"label": m.label, "method": m.method, "settings": m.settings} for m in self.methods],
                "budgets": self.budgets, "budget_sizes": self.budget_sizes, "seeds": self.seeds,
                "class_counts": _class_counts(self.train_set), "dev_class_counts": _class_counts(self.dev_set),
                **({"test_class_counts": _class_counts(self.test_set)} if self.test_set is not None else {})}


@dataclass
class Run:
    checkpoint: str
    method: MethodSpec
    budget: str
    budget_size: int
    seed: int
    source: Checkpoint | None
    fingerprint: str
    dev_size: int = 0

    @property
    def key(self) -> tuple:
        return (self.checkpoint, self.method.label, self.budget, self.seed)

    @property
    def label(self) -> str:
        return f"{self.method.label} @ {self.budget}, seed {self.seed}"

    def cost(self) -> float:
        """Rough relative cost for the ETA: examples seen, counting a dev pass per epoch at a third of a training
        pass (no backward) and model set-up as 50 examples; the pipeline is nearly free."""
        if self.method.method == "pipeline":
            return 0.02 * self.budget_size
        if self.method.method in FROZEN:  # one forward pass over the budget, dev and test
            return 10 + 0.1 * (self.budget_size + 2 * self.dev_size)
        repeats, epochs = epoch_plan(self.method.settings, self.budget_size)
        return 50 + epochs * (repeats * self.budget_size + self.dev_size / 3)


def epoch_plan(settings: dict, n_examples: int) -> tuple[int, float]:
    """How often each example appears per epoch (``min_epoch_size``) and how many epochs to train (``epochs``,
    cut short by ``max_steps``). Returns (repeats, epochs)."""
    repeats = max(1, -(-settings.get("min_epoch_size", 0) // n_examples))
    epochs = float(settings["epochs"])
    if settings.get("max_steps"):
        steps_per_epoch = -(-repeats * n_examples // settings["batch_size"])
        epochs = min(epochs, settings["max_steps"] / steps_per_epoch)
    return repeats, epochs


def _architecture(backbone: dict) -> str:
    """A checkpoint's backbone in a few words, e.g. "encoder 4 layers x 256", "resnet widths 32-64-128-256"."""
    if backbone["family"] == "resnet":
        return (f"resnet widths {'-'.join(map(str, backbone['widths']))}, "
                f"{'-'.join(map(str, backbone['depths']))} blocks")
    if backbone.get("causal"):
        return f"{backbone['family']} {backbone['n_layer']} layers x {backbone['d_model']}, causal"
    return f"{backbone['family']} {backbone['n_layer']} layers x {backbone['d_model']}"


def _audio_settings(checkpoints: list):
    """The mel settings of the first audio checkpoint (every other must share them), or the defaults for a
    pipeline-only grid."""
    from ..data.audio import MelSettings

    for entry in checkpoints:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if path and (Path(str(path)) / "config.json").is_file():
            try:
                settings = (load_config(path).get("inputs") or {}).get("settings")
            except UserError:
                continue
            if settings:
                return MelSettings.from_dict(settings)
    return MelSettings()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_id(path: str) -> list:
    # By content, not modification time: a copied, restored or re-mounted dataset must not make a finished grid
    # train again (hashing is a fraction of a second next to one fine-tuning run).
    return [str(path), _sha256(Path(path))]


def _class_counts(data) -> dict | None:
    if data.task != "classification":
        return None
    counts = np.bincount(np.asarray(data.labels), minlength=data.num_labels)
    return {name: int(n) for name, n in zip(data.label_names, counts)}


# ------------------------------------------------------------------------------------------------ one run


def run_one(spec: CompareSpec, run: Run) -> dict:
    """Train and evaluate one cell of the grid; return its results row."""
    train_all, dev, test, task = spec.train_set, spec.dev_set, spec.test_set, spec.task
    idx = stratified_sample(train_all.labels, run.budget_size, run.seed, train_all.task)
    train = train_all.subset(idx)
    s = run.method.settings
    start = time.perf_counter()
    extra = {}
    if run.method.method == "pipeline":
        metrics, trained = _pipeline(spec, train, s, run.seed)
        extra = {"test": {k[5:]: v for k, v in metrics.items() if k.startswith("test_")}} if test is not None else {}
        epochs = [{"epoch": 1, **{k: v for k, v in metrics.items() if not k.startswith("test_")}}]
    elif run.method.method in FROZEN:
        epochs, trained, extra = _frozen(spec, run, train)
    else:
        epochs, trained, extra = _train_network(spec, run, train)
    best = int(np.argmax([e[task["metric"]] for e in epochs]))
    return {"checkpoint": run.checkpoint, "method": run.method.label, "kind": run.method.method,
            "budget": run.budget, "budget_size": run.budget_size, "seed": run.seed,
            "arch": run.source.arch if run.source else None, "metric": task["metric"],
            "final": epochs[-1], "best_epoch": best + 1, "best": epochs[best], "epochs": epochs, **extra,
            "trained_params": int(trained), "train_examples": len(train),
            "wall_s": round(time.perf_counter() - start, 3), "fingerprint": run.fingerprint}


def _pipeline(spec: CompareSpec, train, s: dict, seed: int) -> tuple[dict, int]:
    """The hand-designed reference of the grid's modality: TF-IDF (text), HOG (images) or MFCC statistics (audio)
    + a linear model."""
    from .classical import hog_linear, mfcc_linear, tfidf_linear

    metrics = spec.task["metrics"]
    if spec.modality == "audio":
        return mfcc_linear(train, spec.dev_set, metrics, seed=seed, C=s["C"], n_mfcc=s["n_mfcc"], test=spec.test_set)
    if spec.modality == "image":
        return hog_linear(train, spec.dev_set, metrics, seed=seed, C=s["C"], orientations=s["orientations"],
                          pixels_per_cell=(s["pixels_per_cell"],) * 2, cells_per_block=(s["cells_per_block"],) * 2,
                          test=spec.test_set)
    if spec.test_set is not None:
        test, _ = tfidf_linear(train, spec.test_set, metrics, seed=seed, C=s["C"], ngram_max=s["ngram_max"],
                               max_features=s["max_features"])
    metrics_dev, trained = tfidf_linear(train, spec.dev_set, metrics, seed=seed, C=s["C"], ngram_max=s["ngram_max"],
                                        max_features=s["max_features"])
    if spec.test_set is not None:
        metrics_dev.update({f"test_{k}": v for k, v in test.items()})
    return metrics_dev, trained


def _frozen(spec: CompareSpec, run: Run, train) -> tuple[list[dict], int, dict]:
    """The frozen-feature protocols (``evaluation.protocols``) on the checkpoint's backbone: weighted kNN with the
    budget's labeled examples as the bank, or logistic regression fitted to their features. No network trains.
    Returns what ``_train_network`` does, with one row per candidate setting in place of epochs (the logistic
    probe's C values; kNN has one), so the grid selects on dev as it selects a network's epoch."""
    from ..evaluation.metrics import confusion_matrix
    from ..evaluation.protocols import extract_features, knn_scores, logistic_probe

    s, task, test = run.method.settings, spec.task, spec.test_set
    model = from_pretrained(run.source.path, task=train.task, num_labels=train.num_labels,
                            label_names=train.label_names, seed=run.seed, verbose=False,
                            **image_adaptation(run.source.path, train))

    def features(data):
        return extract_features(model.module, model.inputs.examples(data, model.module.config, model.max_len))

    scored = {"dev": spec.dev_set, **({"test": test} if test is not None else {})}
    feats = {name: (features(data), np.asarray(data.labels)) for name, data in scored.items()}
    bank, n_classes = features(train), train.num_labels
    candidates = []  # (row settings, {split: metrics}, {split: predictions})
    if run.method.method == "knn":
        results, preds = {}, {}
        for name, (f, y) in feats.items():
            scores = knn_scores(bank, train.labels, f, n_classes, s["k"], s["temperature"])
            preds[name] = scores.argmax(1).numpy()
            results[name] = compute_metrics(task["metrics"], preds[name], y, scores.numpy())
        candidates.append(({}, results, preds))
        fitted = 0
    else:
        for C in ([s["C"]] if s["C"] is not None else LOGISTIC_CS):
            results = logistic_probe(bank, train.labels, feats, n_classes, task["metrics"], C=C, seed=run.seed)
            preds = {name: r.pop("_predictions") for name, r in results.items()}
            candidates.append(({"C": C}, results, preds))
        fitted = (bank.shape[1] + 1) * (n_classes if n_classes > 2 else 1)  # scikit-learn's coefficients
    epochs = [{"epoch": i + 1, **setting, **results["dev"]} for i, (setting, results, _) in enumerate(candidates)]
    _, results, preds = candidates[int(np.argmax([e[task["metric"]] for e in epochs]))]
    evaluated = "test" if test is not None else "dev"
    extra = {"confusion": confusion_matrix(preds[evaluated], feats[evaluated][1], n_classes).tolist()}
    if test is not None:
        extra["test"] = results["test"]
    return epochs, fitted, extra


def _train_network(spec: CompareSpec, run: Run, train) -> tuple[list[dict], int, dict]:
    """Fine-tune (or train from scratch) one model: (epoch rows, trained parameters, extra row fields: the test
    metrics of the best dev epoch when there is a test split, and the confusion matrix of the evaluated split)."""
    from ..evaluation.metrics import confusion_matrix
    from ..training.callbacks import EarlyStopping

    s, task, test = run.method.settings, spec.task, spec.test_set
    init = "scratch" if run.method.method == "scratch" else "pretrained"
    if run.method.method == "intermediate":
        import tempfile
        import warnings

        with tempfile.TemporaryDirectory(prefix="intermediate-") as tmp, warnings.catch_warnings():
            # dropping the source task's head is the method, not a surprise to warn about
            warnings.filterwarnings("ignore", message="the trained .* head of .* was dropped")
            through = _intermediate(run.source.path, s, spec.modality, run.seed, Path(tmp) / "model")
            return _train_network(spec, Run(run.checkpoint, MethodSpec(run.method.label, "finetune", s), run.budget,
                                            run.budget_size, run.seed, Checkpoint(run.source.name, str(through),
                                            run.source.arch, "", "", ""), run.fingerprint, run.dev_size), train)
    model = from_pretrained(run.source.path, task=train.task, num_labels=train.num_labels,
                            label_names=train.label_names, init=init, seed=run.seed, max_len=s.get("max_len", 128),
                            pooling=s.get("pooling"), verbose=False, **image_adaptation(run.source.path, train))
    method = "finetune" if run.method.method == "scratch" else run.method.method
    options = {"lora": {"lora_rank": s.get("rank"), "lora_alpha": s.get("alpha"), "lora_dropout": s.get("dropout")},
               "gradual-unfreeze": {"lr_decay": s.get("lr_decay")}}.get(method)
    repeats, n_epochs = epoch_plan(s, len(train))
    fit_set = train.subset(np.tile(np.arange(len(train)), repeats)) if repeats > 1 else train
    every = s.get("eval_every_epochs", 1)  # evaluations are the slow part of a grid with a large dev set
    model.compile(lr=s["lr"], metrics=task["metrics"], weight_decay=s["weight_decay"], warmup=s["warmup"],
                  schedule=s["schedule"], precision=s["precision"], method=method, method_options=options,
                  eval_every=every * -(-len(fit_set) // s["batch_size"]) if every > 1 else None,
                  eval_sample=s.get("eval_sample"))
    # With a test split, the weights of the best dev epoch are the model (select on dev, report on test).
    keep_best = [EarlyStopping(monitor=f"val_{task['metric']}", patience=10**9, restore_best_weights=True)] \
        if test is not None else []
    augment = s.get("augment")
    fitted = model.fit(fit_set, validation_data=spec.dev_set, epochs=n_epochs, batch_size=s["batch_size"],
                       seed=run.seed, verbose=False, callbacks=keep_best,
                       augment=None if augment in (None, "none") else augment)
    history = fitted.history
    # One row per evaluation, with the mean training loss of the epoch it closed.
    epochs = [{"epoch": round(min(at, n_epochs), 4),
               "train_loss": history["loss"][min(len(history["loss"]) - 1, max(0, math.ceil(at - 1e-9) - 1))],
               **{k[4:]: history[k][i] for k in history if k.startswith("val_")}}
              for i, at in enumerate(fitted.eval_epochs)]
    evaluated = test if test is not None else spec.dev_set
    extra = {"test": model.evaluate(test)} if test is not None else {}
    if train.task == "classification":
        preds = model.predict(evaluated)
        extra["confusion"] = confusion_matrix(preds, evaluated.labels, train.num_labels).tolist()
    return epochs, max(history["trainable_params"]), extra


def read_source_task(source: dict, modality: str):
    """The training split of an intermediate method's source task."""
    if modality == "image":
        from ..data.images import read_images

        size = source.get("image_size")
        size = (size, size) if isinstance(size, int) else tuple(size) if size else None
        return read_images(source["train"], "train", resize=size, label_col=source.get("label_col"),
                           path_col=source.get("path_col"))
    from ..data.labeled import find_split, read_labeled

    return read_labeled(find_split(source["train"], "train"), text_cols=source.get("text_cols"),
                        label_col=source.get("label_col"), task=source.get("task"))


def _intermediate(checkpoint: str, s: dict, modality: str, seed: int, out: Path) -> Path:
    """Fine-tune ``checkpoint`` on the source task (a fresh head, all of its labels or ``source_max`` of them),
    save it to ``out``; the target run then transfers from there, dropping the source head."""
    data = read_source_task(s["source"], modality)
    if s.get("source_max") and s["source_max"] < len(data):
        data = data.subset(stratified_sample(data.labels, s["source_max"], seed, data.task))
    model = from_pretrained(checkpoint, task=data.task, num_labels=data.num_labels, label_names=data.label_names,
                            seed=seed, max_len=s.get("max_len", 128), pooling=s.get("pooling"), verbose=False,
                            **image_adaptation(checkpoint, data))
    model.compile(lr=s.get("source_lr") or s["lr"], weight_decay=s["weight_decay"], warmup=s["warmup"],
                  schedule=s["schedule"], precision=s["precision"])
    model.fit(data, epochs=s["source_epochs"], batch_size=s["batch_size"], seed=seed, verbose=False)
    model.save(out)
    return out


# ------------------------------------------------------------------------------------------------ in a worker

# Data sets a worker process has read, by CompareWork.token: read once per process, however many runs it does.
_WORKER_DATA: dict[str, tuple] = {}


class CompareWork:
    """``run_one`` for a grid's executor: callable on a ``Run``, and picklable without the data sets.

    In this process it runs on the spec as parsed. Sent to a worker process (or a Ray node) it travels without
    the train/dev/test sets, and the worker reads them again from the paths the spec names (relative ones from
    the directory the grid was started in), once per process, checking that their contents are still what the
    grid was planned on. Re-reading costs a fraction of a second once per worker (docs/performance.md) and sends
    no data over the wire, which on a cluster is the point.
    """

    def __init__(self, spec: CompareSpec):
        self.spec = spec
        self.cwd = os.getcwd()
        self.files = [sha for _, sha in spec.data_files()]
        self.token = _sha256_text(json.dumps([self.cwd, spec.task_entry, self.files], sort_keys=True, default=str))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["spec"] = replace(self.spec, train_set=None, dev_set=None, test_set=None)
        return state

    def __call__(self, run: Run) -> dict:
        if self.spec.train_set is not None:
            return run_one(self.spec, run)
        if run.source is not None:
            run = replace(run, source=replace(run.source, path=self._path(run.source.path)))
        if run.method.method == "intermediate":  # its source task's file, relative to where the grid started
            source = run.method.settings["source"]
            source = {**source, "train": self._path(str(source["train"]))}
            run = replace(run, method=replace(run.method, settings={**run.method.settings, "source": source}))
        return run_one(self._spec_with_data(), run)

    def _path(self, path: str) -> str:
        return os.path.join(self.cwd, path)  # an absolute path stays as it is

    def _spec_with_data(self) -> CompareSpec:
        if self.token not in _WORKER_DATA:
            spec = self.spec
            entry = {k: (self._path(str(v)) if k in ("train", "dev", "test") and v else v)
                     for k, v in spec.task_entry.items()}
            text_cols = entry.get("text_cols")
            read = {k: spec.task[k] for k in READ_KEYS if k in spec.task}  # as validated when the spec was parsed
            splits = spec._read_splits(entry, [text_cols] if isinstance(text_cols, str) else text_cols,
                                       entry.get("task"), read)
            for data, sha in zip([d for d in splits if d is not None], self.files):
                if _sha256(Path(data.source)) != sha:
                    raise UserError(f"{data.source} changed while the grid ran (its contents differ from what "
                                    f"the grid was planned on). Restore it, or start the grid again: runs of the "
                                    f"new contents get new fingerprints.")
            _WORKER_DATA.clear()  # one grid's data per process
            _WORKER_DATA[self.token] = splits
        with_data = copy.copy(self.spec)
        with_data.train_set, with_data.dev_set, with_data.test_set = _WORKER_DATA[self.token]
        return with_data


# ------------------------------------------------------------------------------------------------ the grid


def default_out(spec: CompareSpec) -> Path:
    return Path(spec.out) if spec.out else Path("runs") / "compare" / spec.name


def run_compare(spec_or_path: str | Path | dict | CompareSpec, out: str | Path | None = None,
                progress: bool = True, executor: ExecutorConfig | None = None, command: str | None = None) -> dict:
    """Run (or resume) a comparison grid and write its results, summary, plots and report.

    Args:
        spec_or_path: a YAML spec path, the same data as a dict, or a parsed ``CompareSpec``.
        out: the output directory (default: the spec's ``out:``, else runs/compare/NAME).
        progress: show the runs-done / ETA bar and a line per finished run.
        executor: where the runs execute (local worker processes, Ray); None: one after another in this
            process. The rows are the same either way at the same thread count per run.
        command: the command line that ran this grid, which an interrupt prints to continue it (default: the
            compare command for the spec and ``out``).
    Returns:
        {"rows": the results rows of this spec, "summary": summary rows, "conclusion": paragraphs,
         "files": written paths, "ran": runs trained now, "skipped": runs found finished}.
    """
    spec = spec_or_path if isinstance(spec_or_path, CompareSpec) else CompareSpec.parse(spec_or_path)
    out = Path(out) if out is not None else default_out(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory for the comparison's results.")
    results_path = out / RESULTS
    # logs/ alone is what a grid whose every run failed leaves (the failure message points at it): rerunnable.
    if out.is_dir() and any(p.name != "logs" for p in out.iterdir()) and not results_path.is_file():
        raise UserError(f"'{out}' already holds files but no {RESULTS}, so it is not a comparison to resume. "
                        f"Choose another --out.")
    plan = spec.plan()

    def describe(run: Run, row: dict) -> str:
        value = (row.get("test") or row["final"])[row["metric"]]
        split = "test" if "test" in row else "dev"
        return (f"  {run.checkpoint} {run.method.label:>16} budget {run.budget:>5} seed {run.seed}: {split} "
                f"{row['metric']} {value:.4f} ({row['wall_s']:.1f} s)")

    def first_row() -> None:
        guard.commit()
        report.remove_outputs(out)  # the old report no longer describes the results once new rows land

    again = (f"run `{command or shlex.join(['transferlab', 'compare', spec.source, '--out', str(out)])}`"
             if command or spec.source != "spec" else
             f"call run_compare again with the same spec and out='{out}'")
    # Until a first run has finished, a failure leaves the output directory as it was.
    with ProvisionalDir(out, what="the first run finished") as guard:
        try:
            grid = run_grid(plan, CompareWork(spec), results_path, progress=progress, describe=describe,
                            row_key=lambda row: (row["checkpoint"], row["method"], row["budget"], row["seed"]),
                            on_resume=first_row, executor=executor, paths=spec.paths())
        except KeyboardInterrupt:
            if guard.committed:
                finished = len(read_results(results_path))
                print(f"\ninterrupted: the {finished} finished run(s) are kept in {results_path}. To continue, "
                      f"{again}: finished runs are not run again, the interrupted ones start over.", file=sys.stderr)
            raise
    # Outside the guard: runs that failed in workers leave their logs, which the message points at.
    if grid["failed"]:
        failed = grid["failed"]
        listed = "; ".join(f"{f['label']} (log: {f['log']})" for f in failed[:5])
        raise UserError(f"{len(failed)} of {len(plan)} runs failed: {listed}{' ...' if len(failed) > 5 else ''}. "
                        f"The {len(grid['rows'])} finished runs are kept in {results_path}; no report was written, "
                        f"since it would leave the failed runs out. Read the logs, then run the same command "
                        f"again: it runs only what is missing.")
    rows = grid["rows"]
    written = report.write_all(out, spec.describe(), rows)
    if progress:
        print(written["table"])
        print()
        print("\n\n".join(written["conclusion"]))
        print(f"\nwrote {out / RESULTS}, {', '.join(p.name for p in written['files'])} in {out}")
    return {"rows": rows, "summary": written["summary"], "conclusion": written["conclusion"],
            "files": written["files"], "ran": grid["ran"], "skipped": grid["skipped"]}
