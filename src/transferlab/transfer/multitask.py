"""The Keras-style workflow for multi-task models: one backbone from a checkpoint, a head per task, trained jointly.

    model = transferlab.from_pretrained("runs/mlm-tiny/final", heads={"sst2": 2, "stsb": "regression"})
    model.compile(lr=1e-4, weighting="uncertainty", sampling="temperature")
    model.fit({"sst2": "../shared/data/sst2/train.tsv", "stsb": "../shared/data/stsb"}, steps=600,
              validation_data={"sst2": "../shared/data/sst2/dev.tsv", "stsb": "../shared/data/stsb"})
    model.evaluate({...})  # {"sst2": {"loss": ..., "accuracy": ...}, "stsb": {...}}

Data is given per task (a file, a GLUE directory, an image source, or Python data), or as ``TaskSource``s
(``data.multitask``) when one file labels several tasks with missing cells. ``fit`` is a thin wrapper over the one
loop (``training.loop.train``) with ``MultiTaskBatches`` as its data and ``evaluate_multitask`` as its evaluation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data.multitask import MultiTaskBatches, SourceSampler, TaskSource, read_task_source, source_from_arrays
from ..errors import UserError
from ..evaluation.multitask import check_task_metrics, default_task_metrics, evaluate_multitask, task_logits
from ..tasks.weighting import PCGRAD_ONE_TASK_PER_STEP
from ..training.callbacks import Callback
from ..training.checkpoint import save_checkpoint
from ..training.distributed import world
from ..training.loop import plan_steps, train
from ..training.optim import build_optimizer, build_scheduler, default_lr_for, param_groups
from ..training.settings import TrainSettings
from .facade import History
from .pretrained import build_transfer

# Kendall et al.'s log-variances start at 0 and must travel ~1 to matter: at a fine-tuning learning rate (5e-5) they
# would barely move in a CPU-sized run, so they get a learning rate of their own.
WEIGHTING_LR = 1e-2


def head_specs(heads) -> list[dict]:
    """Task dicts (name, kind, num_labels, label_names) from what a user passes as ``heads``: a dict task name ->
    a number of classes, "regression", or a dict (``{"kind": "multilabel", "num_labels": 10}``,
    ``{"label_names": [...]}``); or a list of ``TaskSource``s, whose tasks say what they need."""
    if isinstance(heads, TaskSource):
        heads = [heads]
    if isinstance(heads, list) and all(isinstance(s, TaskSource) for s in heads):
        return [t.spec() for s in heads for t in s.tasks.values()]
    if not isinstance(heads, dict) or not heads:
        raise UserError("heads= is a dict of task name -> number of classes, 'regression', or {'kind': ..., "
                        "'num_labels': ...}, e.g. heads={'sst2': 2, 'stsb': 'regression'}.")
    out = []
    for name, h in heads.items():
        if isinstance(h, bool):
            h = None
        if isinstance(h, int):
            out.append({"name": name, "kind": "classification", "num_labels": h})
        elif h == "regression":
            out.append({"name": name, "kind": "regression", "num_labels": 1})
        elif isinstance(h, dict):
            out.append({"name": name, **h})
        else:
            raise UserError(f"heads['{name}'] = {h!r}: give a number of classes (2), 'regression', or a dict such as "
                            f"{{'kind': 'multilabel', 'num_labels': 10}}.")
    return out


def multitask_from_pretrained(directory: str | Path, heads, init: str = "pretrained", keep_heads=(),
                              pooling: str | None = None, weighting="equal", seed: int = 0, max_len: int = 128,
                              verbose: bool = True, dropout: float | str | None = "auto",
                              channels: int | None = None, image_size: tuple[int, int] | None = None
                              ) -> "MultiTaskModel":
    """The backbone of ``directory`` under one fresh head per task (``from_pretrained(..., heads=...)``).

    Args:
        heads: see ``head_specs``.
        keep_heads: heads of a multi-task checkpoint to carry over instead of training fresh ones (same task name
            and number of outputs); every other head is dropped.
        weighting: "equal", "uncertainty" or "pcgrad" (``tasks.weighting``); ``compile`` can change it.
        Others as ``from_pretrained``.
    """
    spec = {"kind": "multitask", "tasks": head_specs(heads), "pooling": pooling, "weighting": weighting,
            "keep_heads": list(keep_heads)}
    module, inputs, report = build_transfer(directory, "multitask", init=init, seed=seed, verbose=verbose,
                                            dropout=dropout, channels=channels, image_size=image_size, task_spec=spec)
    return MultiTaskModel(module, inputs, report, max_len)


class _EvalHistory(Callback):
    def __init__(self, history: History):
        self.history = history

    def on_eval_end(self, state, metrics):
        self.history.epoch.append(round(state.epoch, 4))
        for k, v in metrics.items():
            self.history.history.setdefault(f"val_{k}", []).append(v)

    def on_step_end(self, state, logs):
        if "loss" in logs:
            self.history.history.setdefault("loss", []).append(logs["loss"])


class MultiTaskModel:
    """A multi-task module + its preprocessor, with compile / fit / evaluate / predict / save."""

    def __init__(self, module, inputs, report=None, max_len: int = 128):
        self.module, self.inputs, self.report = module, inputs, report
        self.max_len = min(max_len, getattr(module.config, "max_len", max_len))
        self.compiled = None

    @property
    def tasks(self) -> list[str]:
        return self.module.task_names

    def compile(self, weighting=None, sampling: str = "proportional", temperature: float = 2.0,
                sampling_weights: dict[str, float] | None = None, metrics: dict[str, list[str]] | None = None,
                weighting_lr: float = WEIGHTING_LR, method: str = "finetune", settings: TrainSettings | None = None,
                **overrides):
        """How the model trains: the task sampling and loss weighting, and the training settings as
        ``TransferModel.compile`` takes them (a ``FinetuneSettings``: start from ``settings``, change fields by
        keyword, e.g. ``lr=1e-4, warmup=0.06, precision="fp32"``; ``lr`` None picks the model's default,
        ``default_lr``).

        Args:
            weighting: "equal", "uncertainty", "pcgrad" (None keeps the model's).
            sampling: which task's data each step trains on: "proportional" (to its size), "uniform",
                "temperature" (p ∝ n^(1/temperature)), "round-robin", or "weighted" (``sampling_weights``, per task;
                a source labelling several tasks weighs their sum).
            metrics: task name -> metric names (default per kind: accuracy/F1, Pearson/Spearman, ROC AUC).
            weighting_lr: learning rate of a learned weighting's parameters (uncertainty's log-variances).
            method: "finetune", or "linear-probe" (only the heads train).
        """
        from ..tasks.weighting import build_weighting
        from .facade import compiled_settings
        from .methods import apply_method

        settings = compiled_settings(settings, overrides, self.default_lr)
        if weighting is not None:
            kinds = {t["name"]: t["kind"] for t in self.module.tasks}
            self.module.weighting = build_weighting(weighting, kinds)
        for name, names in (metrics or {}).items():
            check_task_metrics(name, self.module.task(name)["kind"], names)
        if method not in ("finetune", "linear-probe"):
            raise UserError(f"multi-task models train with method 'finetune' or 'linear-probe', got '{method}'.")
        apply_method(self.module, method)
        from ..data.multitask import SAMPLING

        if sampling not in SAMPLING:
            raise UserError(f"unknown sampling '{sampling}'; choose one of {', '.join(SAMPLING)}.")
        self.compiled = dict(settings=settings, sampling=sampling, temperature=temperature,
                             sampling_weights=sampling_weights, metrics=dict(metrics or {}), weighting_lr=weighting_lr)
        return self

    def default_lr(self) -> float:
        """The learning rate used when none is given, as for a single-task model (``default_lr_for``)."""
        return default_lr_for(self.inputs.modality, getattr(self.module.config, "d_model", None))

    # ---- data ----
    def sources(self, data, split: str | None = "train", **options) -> list[TaskSource]:
        """``TaskSource``s from ``data``: sources already read, or a dict task name -> a file / directory / image
        source, (x, y) Python data, or a labeled set. ``options``: ``text_cols``, ``path_col``, ``image_size``."""
        if isinstance(data, TaskSource):
            data = [data]
        if isinstance(data, list) and all(isinstance(s, TaskSource) for s in data):
            sources = data
        elif isinstance(data, dict):
            sources = [self._source(name, value, split, options) for name, value in data.items()]
        else:
            raise UserError("multi-task data is a dict of task name -> data (a file, a directory, (x, y)), or a list "
                            "of TaskSource (data.multitask.read_task_source, for a file with several label columns).")
        seen = set()
        for s in sources:
            s_mod = s.modality
            if s_mod != self.inputs.modality:
                raise UserError(f"{s.name} holds {s_mod} data but the model reads {self.inputs.modality}; one "
                                f"backbone reads one kind of input.")
            for name, labels in s.tasks.items():
                if name in seen:
                    raise UserError(f"task '{name}' is given twice; every task's labels come from one source.")
                seen.add(name)
                self._bind(name, labels)
        return sources

    def _source(self, name: str, value, split, options) -> TaskSource:
        t = self.module.task(name)
        names = {name: t["label_names"]} if t["label_names"] else None
        if isinstance(value, (str, Path)):
            return read_task_source(value, [{"name": name, "kind": t["kind"], "columns": None}], self.inputs.modality,
                                    split or ("test" if self.inputs.modality == "image" else "dev"),
                                    label_names=names, **options)
        if isinstance(value, tuple) and len(value) == 2:
            return source_from_arrays(value[0], {name: (t["kind"], value[1])}, names, source=f"<{name}>")
        if hasattr(value, "labels") and value.labels is not None:  # a LabeledSet or an ImageSet of this task
            if value.task != t["kind"]:
                raise UserError(f"{value.source}: the data is a {value.task} task but head '{name}' is {t['kind']}.")
            from ..data.multitask import TaskLabels

            v = np.asarray(value.labels, dtype=np.int64 if t["kind"] == "classification" else np.float32)
            return TaskSource(value, {name: TaskLabels(name, t["kind"], v, value.label_names, value.source)})
        raise UserError(f"data for task '{name}': pass a file or directory, (x, y), or a labeled set.")

    def _bind(self, name: str, labels) -> None:
        """Check a task's labels fit its head; record the class names the first time data names them."""
        t = self.module.task(name)
        if labels.kind != t["kind"]:
            raise UserError(f"{labels.source}: task '{name}' has {labels.kind} labels but its head is {t['kind']}.")
        if labels.num_labels != t["num_labels"]:
            raise UserError(f"{labels.source}: task '{name}' has {labels.num_labels} labels {labels.label_names} but "
                            f"its head has {t['num_labels']} outputs; build the model with heads={{'{name}': "
                            f"{labels.num_labels}}} or fix the data.")
        if t["kind"] != "regression" and t["label_names"] is None:
            t["label_names"] = list(labels.label_names)

    def _examples(self, sources, augment=None):
        return [self.inputs.examples(s.data, self.module.config, self.max_len, augment=augment) for s in sources]

    # ---- Keras API ----
    def fit(self, x, validation_data=None, steps: int | None = None, epochs: float | None = None,
            batch_size: int | None = None, seed: int | None = None, run_dir: str | Path | None = None,
            verbose: bool | None = None, callbacks: list[Callback] | None = None, device: str | None = None,
            augment=None, eval_every: int | None = None, resume: bool = False, **options) -> History:
        """Train every head jointly on ``x`` (see ``sources``) for ``steps`` optimizer steps (or ``epochs``: one
        epoch draws as many examples as all sources hold). Each step's batch comes from one source, drawn by the
        compiled ``sampling`` (with ``grad_accum``, each micro-batch draws its own); its loss is the weighting of the
        per-task means over the labels present. ``validation_data``: scored per task every ``eval_every`` steps
        (default: once per epoch, or 10 times). ``steps``, ``epochs``, ``batch_size``, ``seed``, ``device``,
        ``eval_every`` and ``verbose`` (the progress bar) override the compiled settings for this call."""
        if self.compiled is None:
            self.compile()
        c = self.compiled
        given = {"steps": steps, "epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device,
                 "eval_every": eval_every, "progress": verbose}
        s = replace(c["settings"], **{k: v for k, v in given.items() if v is not None})
        rank, world_size = world()
        if s.eval_sample is not None:
            raise UserError("eval_sample: a multi-task evaluation scores every dev example of every task; leave "
                            "eval_sample unset (give a smaller dev file to evaluate faster).")
        if world_size > 1 and s.distributed != "ddp":
            raise UserError(f"--distributed {s.distributed}: multi-task models train under ddp (a model copy per "
                            f"process); use --distributed ddp.")
        if self.module.weighting.name == "pcgrad" and world_size > 1:
            raise UserError("weighting 'pcgrad' computes per-task gradients inside the forward pass, which DDP does "
                            "not see; run it in one process, or use weighting 'equal' or 'uncertainty' under torchrun.")
        train_sources = self.sources(x, "train", **options)
        if self.module.weighting.name == "pcgrad" and all(len(s.tasks) == 1 for s in train_sources):
            raise UserError(PCGRAD_ONE_TASK_PER_STEP)
        dev_sources = self.sources(validation_data, "dev", **options) if validation_data is not None else None
        sizes = [len(src) for src in train_sources]
        weights = None
        if c["sampling"] == "weighted":
            w = c["sampling_weights"] or {}
            missing = [n for src in train_sources for n in src.tasks if n not in w]
            if missing:
                raise UserError(f"sampling 'weighted' needs a weight for every task; missing: {', '.join(missing)}.")
            weights = [sum(float(w[n]) for n in src.tasks) for src in train_sources]
        sampler = SourceSampler(sizes, c["sampling"], s.seed, c["temperature"], weights)
        data = MultiTaskBatches(train_sources, self._examples(train_sources, self._augment(augment)),
                                s.batch_size // s.grad_accum, sampler, s.seed, rank, world_size)
        dev_examples = self._examples(dev_sources) if dev_sources else None
        groups = param_groups(torch.nn.ModuleDict({"backbone": self.module.backbone, "heads": self.module.heads}),
                              s.weight_decay)
        learned = [p for p in self.module.weighting.parameters() if p.requires_grad]
        if learned:
            groups.append({"params": learned, "weight_decay": 0.0, "lr": c["weighting_lr"]})
        optimizer = build_optimizer(self.module, s.lr, s.weight_decay, name=s.optimizer, groups=groups)
        total, _ = plan_steps(s, data.steps_per_epoch)
        scheduler = build_scheduler(optimizer, s.schedule, total, s.warmup, s.cooldown)
        if s.log_every is None:
            s = replace(s, log_every=max(1, min(50, total // 10)))
        history = History()

        metrics = {n: self.metrics_for(n) for n in self.tasks}

        def evaluate(module):
            return evaluate_multitask(module, dev_sources, dev_examples, metrics)

        train(self.module, data, s, evaluate=evaluate if dev_sources else None, run_dir=run_dir,
              inputs=self.inputs, extra_config={"max_len": self.max_len},
              callbacks=[_EvalHistory(history), *(callbacks or [])], optimizer=optimizer, scheduler=scheduler,
              resume=resume)
        return history

    def _augment(self, augment):
        if augment is None or augment == "none":
            return None
        if self.inputs.modality != "image":
            raise UserError(f"augment= applies to image models; this one reads {self.inputs.modality}.")
        from ..data.augment import Augment, augment_config

        return Augment(augment_config(augment))

    def evaluate(self, x, batch_size: int = 64, **options) -> dict[str, dict[str, float]]:
        """Per-task loss and metrics: {task: {"loss": ..., metric: ...}} for every task ``x`` labels."""
        sources = self.sources(x, None, **options)
        self.module.eval()
        flat = evaluate_multitask(self.module, sources, self._examples(sources),
                                  {n: self.metrics_for(n) for n in self.tasks}, batch_size)
        out: dict[str, dict[str, float]] = {}
        for key, value in flat.items():
            if "/" in key:
                task, metric = key.split("/", 1)
                out.setdefault(task, {})[metric] = value
        return out

    def predict(self, x, task: str, batch_size: int = 64, return_probs: bool = False) -> np.ndarray:
        """One task's predictions on unlabeled data (a file read without labels, texts, or an image array):
        class ids, regression values, or (N, K) 0/1 multilabel decisions; ``return_probs``: probabilities."""
        from ..inputs import labeled_data

        self.module.task(task)
        if isinstance(x, np.ndarray) and x.ndim >= 3:
            from ..data.images import ImageSet

            data = self.inputs.check_data(ImageSet.from_arrays(x))
        else:
            data = labeled_data(self.inputs, x, split=None) if not isinstance(x, TaskSource) else x.data
        self.module.eval()
        logits = task_logits(self.module, self.inputs.examples(data, self.module.config, self.max_len))[task]
        kind = self.module.task(task)["kind"]
        if return_probs and kind == "classification":
            return torch.softmax(logits, -1).numpy()
        if return_probs and kind == "multilabel":
            return torch.sigmoid(logits).numpy()
        return self.module.predictions(task, logits).numpy()

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.module, self.inputs, extra={"max_len": self.max_len})

    def metrics_for(self, task: str) -> list[str]:
        """The metrics ``task`` is scored with (compiled, or its kind's defaults; the first is the headline)."""
        t = self.module.task(task)
        return (self.compiled or {}).get("metrics", {}).get(task) or default_task_metrics(
            t["kind"], t["num_labels"], self.inputs.modality)
