"""The Keras-style facade the classic fine-tuning tutorial uses: compile, fit, evaluate, predict.

``fit`` is a thin wrapper over ``training.loop.train``; everything else is input handling. With ``loss=None``
the task's own loss is used (the right default). A user loss that expects probabilities while the model emits
logits (Keras's ``from_logits`` trap) is caught at ``compile`` and explained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.batches import ExampleBatches
from ..errors import UserError
from ..evaluation.metrics import check_metrics_fit_task, default_metrics
from ..evaluation.predict import evaluate_classifier, predict_logits
from ..inputs import labeled_data
from ..training.callbacks import Callback
from ..training.distributed import is_main, world
from ..training.fsdp import full_state, is_sharded
from ..training.checkpoint import save_checkpoint
from ..training.loop import TrainConfig, train
from ..training.optim import build_optimizer, build_scheduler
from .methods import apply_method, check_distributed, trainable_parameters


class SparseCategoricalCrossentropy:
    """Keras-named cross-entropy on integer labels. ``from_logits=False`` means it expects probabilities."""

    def __init__(self, from_logits: bool = False):
        self.from_logits = from_logits

    def __call__(self, y_true, y_pred):
        if self.from_logits:
            return nn.functional.cross_entropy(y_pred, y_true.long())
        return nn.functional.nll_loss(torch.log(y_pred.clamp_min(1e-12)), y_true.long())


class MeanSquaredError:
    def __call__(self, y_true, y_pred):
        return nn.functional.mse_loss(y_pred.squeeze(-1), y_true.float())


def _call_loss(loss, logits, labels):
    """torch losses take (input, target); Keras-style callables take (y_true, y_pred)."""
    return loss(logits, labels) if isinstance(loss, nn.Module) else loss(labels, logits)


def check_loss(loss, problem: str, num_labels: int) -> None:
    """Probe a user loss on logits; refuse one that only makes sense on probabilities."""
    if problem != "classification":
        return
    trap = ("the model returns logits (unnormalised scores, any real number), but this loss expects "
            "probabilities. Pass loss=None to use the model's own cross-entropy, or "
            "SparseCategoricalCrossentropy(from_logits=True), or nn.CrossEntropyLoss().")
    if getattr(loss, "from_logits", True) is False:
        raise UserError(f"compile(loss=...): {trap}")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, num_labels, generator=g) * 4
    labels = torch.randint(0, num_labels, (8,), generator=g)
    try:
        value = float(_call_loss(loss, logits, labels))
    except (RuntimeError, ValueError) as e:
        raise UserError(f"compile(loss=...): calling the loss on logits failed ({e}). {trap}") from None
    if not np.isfinite(value) or value < 0:
        raise UserError(f"compile(loss=...): the loss gave {value} on logits (a cross-entropy is never negative). "
                        f"{trap}")


@dataclass
class History:
    """Per-epoch values, Keras-style: ``history.history["val_accuracy"][epoch]``."""

    history: dict = field(default_factory=dict)
    epoch: list = field(default_factory=list)

    def best(self, metric: str, mode: str = "max") -> tuple[int, float]:
        values = self.history[metric]
        i = int(np.argmax(values) if mode == "max" else np.argmin(values))
        return i, values[i]


class _LossOverride(nn.Module):
    def __init__(self, module, loss):
        super().__init__()
        self.module, self.loss = module, loss

    def forward(self, batch):
        out = self.module({k: v for k, v in batch.items() if k != "labels"})
        out["loss"] = _call_loss(self.loss, out["logits"], batch["labels"])
        return out

    @property
    def unit(self) -> str:
        return self.module.unit

    def count(self, batch: dict) -> int:
        return self.module.count(batch)


class _EpochHistory(Callback):
    """Mean training loss per epoch, and the validation metrics of each end-of-epoch evaluation."""

    def __init__(self, history: History, steps_per_epoch: int):
        self.history, self.per_epoch = history, steps_per_epoch
        self.losses: list[float] = []

    def on_step_end(self, state, logs):
        self.losses.append(state.last_loss)
        if state.step % self.per_epoch == 0 or state.step == state.max_steps:
            self.history.history.setdefault("loss", []).append(float(np.mean(self.losses)))
            # Methods that freeze or unfreeze (linear probe, gradual unfreezing) show here what really trained.
            self.history.history.setdefault("trainable_params", []).append(trainable_parameters(state.module))
            self.history.epoch.append(round(state.epoch, 4))
            self.losses = []

    def on_eval_end(self, state, metrics):
        for k, v in metrics.items():
            self.history.history.setdefault(f"val_{k}", []).append(v)


class TransferModel:
    """A task module + its preprocessor (``inputs``: a tokenizer, an image preprocessor), with the Keras workflow.
    Get one from ``from_pretrained``; it reads texts, images and files of its own modality."""

    def __init__(self, module, inputs, report=None, max_len: int = 128):
        self.module, self.inputs, self.report = module, inputs, report
        self.max_len = min(max_len, getattr(module.config, "max_len", max_len))
        self.compiled = None
        self.method = None  # a transfer.methods.TransferMethod once compile(method=...) ran

    @property
    def tokenizer(self):
        """The text preprocessor (None for other modalities)."""
        return self.inputs if self.inputs.modality == "text" else None

    @property
    def problem(self) -> str:
        return self.module.problem

    def compile(self, optimizer="adamw", loss=None, metrics=None, lr: float = 5e-5, weight_decay: float = 0.01,
                schedule: str = "linear", warmup: float = 0.1, precision: str = "auto", clip: float = 1.0,
                method: str | None = None, method_options: dict | None = None):
        """``optimizer``: "adamw"/"adam"/"sgd", a torch optimizer over ``model.parameters()``, or a callable
        ``params -> optimizer``. ``schedule``: "linear" (warm-up then decay), "cosine", "constant" or "slanted".
        ``method``: "finetune", "linear-probe", "gradual-unfreeze" or "lora" (``transfer.methods.apply_method``;
        ``method_options`` such as ``{"lora_rank": 8}``); None keeps the model's trainable set as it is."""
        metrics = list(metrics) if metrics else self.default_metrics()
        check_metrics_fit_task(metrics, self.problem)
        if loss is not None:
            check_loss(loss, self.problem, self.module.num_labels)
        if method is not None:
            self.method = apply_method(self.module, method, **(method_options or {}))
        self.compiled = dict(optimizer=optimizer, loss=loss, metrics=metrics, lr=lr, weight_decay=weight_decay,
                             schedule=schedule, warmup=warmup, precision=precision, clip=clip)
        return self

    @property
    def _precision(self) -> str:
        """evaluate/predict compute in the precision the model was compiled to train in ("auto" by default)."""
        return (self.compiled or {}).get("precision", "auto")

    def default_metrics(self) -> list[str]:
        return default_metrics(self.problem, self.module.num_labels, self.inputs.modality)

    def parameters(self):
        return self.module.parameters()

    # ---- data ----
    def _labeled(self, x, y=None, require_labels: bool = False, split: str | None = "train"):
        """A labeled set of this model's modality from a file or folder, an in-memory set, or Python data."""
        return labeled_data(self.inputs, x, y, task=self.problem, label_names=self.module.label_names,
                            require_labels=require_labels, split=split)

    def read(self, path, split: str | None = None, require_labels: bool = False, **options):
        """Labeled data from a file or folder, read the way this model reads its modality (text columns, image
        size). ``split``: which split of a directory or ``.npz`` holding several (default: dev for text, test for
        images); ``options`` as ``inputs.labeled_data`` takes them."""
        return labeled_data(self.inputs, path, task=self.problem, label_names=self.module.label_names,
                            require_labels=require_labels, split=split, **options)

    def _encode(self, data, augment=None):
        if data.labels is not None and self.problem == "classification":
            bad = [(line, lab) for line, lab in zip(data.lines, data.labels)
                   if not 0 <= int(lab) < self.module.num_labels]
            if bad:
                raise UserError(f"{data.source}:{bad[0][0]}: label {bad[0][1]} is outside the model's "
                                f"{self.module.num_labels} labels; fix the data or use --num-labels.")
        return self.inputs.examples(data, self.module.config, self.max_len, augment=augment)

    # ---- Keras API ----
    def fit(self, x, y=None, validation_data=None, epochs: float = 3, batch_size: int = 32,
            callbacks: list[Callback] | None = None, seed: int = 0, run_dir: str | Path | None = None,
            verbose: bool = True, resume: bool = False, device: str = "cpu", distributed: str = "ddp",
            augment=None) -> History:
        """Train on ``x``: a file or folder, a labeled set, texts (or images as an array) with labels ``y``.

        ``augment`` (images): a recipe name, overrides or an ``AugmentConfig`` (``data.augment``) applied to
        every training batch, seeded by ``seed`` and the step; None trains on the images as they are.
        ``distributed``: "ddp" or "fsdp" under torchrun with more than one rank (see ``training.fsdp``)."""
        if self.compiled is None:
            self.compile()
        check_distributed(self.method.name if self.method else None, distributed)
        c = self.compiled
        rank, world_size = world()  # under torchrun each rank trains on its slice of every batch
        train_data = ExampleBatches(self._encode(self._labeled(x, y, require_labels=True),
                                                 augment=self._augment(augment)), batch_size, seed, rank, world_size)
        dev = self._encode(self._labeled(*validation_data, split="dev") if isinstance(validation_data, tuple)
                           else self._labeled(validation_data, split="dev")) if validation_data is not None else None
        module = self.module if c["loss"] is None else _LossOverride(self.module, c["loss"])
        optimizer = c["optimizer"]
        method_callbacks = self.method.make_callbacks(self.module) if self.method else []
        if isinstance(optimizer, str) and self.method is not None:
            optimizer = self.method.optimizer(self.module, c["lr"], c["weight_decay"], name=optimizer)
        elif isinstance(optimizer, str):
            optimizer = build_optimizer(module, c["lr"], c["weight_decay"], name=optimizer)
        elif callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(module.parameters())
        steps = max(1, int(np.ceil(epochs * train_data.steps_per_epoch)))
        schedule = (self.method.schedule if self.method else None) or c["schedule"]
        scheduler = build_scheduler(optimizer, schedule, steps, c["warmup"])
        history = History()
        user_loss = c["loss"]

        def evaluate(_):
            fn = None if user_loss is None else (lambda logits, labels: _call_loss(user_loss, logits, labels))
            return evaluate_classifier(self.module, dev, c["metrics"], loss_fn=fn, precision=c["precision"])

        cfg = TrainConfig(epochs=epochs, precision=c["precision"], clip=c["clip"], seed=seed, progress=verbose,
                          device=device, log_every=max(1, train_data.steps_per_epoch // 4), distributed=distributed)
        recorder = _EpochHistory(history, train_data.steps_per_epoch)
        extra = {"label_names": self.module.label_names, "max_len": self.max_len}
        # the method's callbacks come last: at the end of training the user's (e.g. EarlyStopping restoring the best
        # weights) must see the module they trained, before LoRA's adapters are merged into it
        train(module, train_data, cfg, evaluate=evaluate if dev is not None else None, run_dir=run_dir,
              inputs=self.inputs, extra_config=extra, callbacks=[recorder, *(callbacks or []), *method_callbacks],
              optimizer=optimizer, scheduler=scheduler, resume=resume)
        return history

    def _augment(self, augment):
        if augment is None:
            return None
        if self.inputs.modality != "image":
            raise UserError(f"augment= applies to image models; this one reads {self.inputs.modality}.")
        from ..data.augment import Augment, augment_config

        return Augment(augment_config(augment))

    def evaluate(self, x, y=None, batch_size: int = 64) -> dict:
        metrics = (self.compiled or {}).get("metrics") or self.default_metrics()
        data = self._labeled(x, y, split=None)
        if data.labels is None:
            raise UserError(f"{data.source} has no labels to evaluate against; use predict instead.")
        self.module.eval()
        return evaluate_classifier(self.module, self._encode(data), metrics, batch_size, precision=self._precision)

    def predict(self, x, batch_size: int = 64, return_probs: bool = False) -> np.ndarray:
        """Class ids (or regression values); with ``return_probs`` the softmax probabilities."""
        data = self._labeled(x, split=None)
        self.module.eval()
        logits = predict_logits(self.module, self._encode(data), batch_size, self._precision)
        if return_probs and self.problem == "classification":
            return torch.softmax(logits, -1).numpy()
        return self.module.predictions(logits).numpy()

    def save(self, directory: str | Path) -> Path:
        """Write a checkpoint directory. After ``fit(distributed="fsdp")`` the model is sharded: call this on every
        rank (they gather the full weights together), rank 0 writes."""
        weights, _ = full_state(self.module)  # None unless sharded
        if is_sharded(self.module) and not is_main():
            return Path(directory)
        return save_checkpoint(directory, self.module, self.inputs, weights=weights,
                               extra={"label_names": self.module.label_names, "max_len": self.max_len})
