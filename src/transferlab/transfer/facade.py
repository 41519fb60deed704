"""The Keras-style facade the classic fine-tuning tutorial uses: compile, fit, evaluate, predict.

``fit`` is a thin wrapper over ``training.loop.train``; everything else is input handling. ``compile`` stores the
training settings as one ``FinetuneSettings`` (validated there, as the command line validates them), and ``fit``'s
arguments override its fields. With ``loss=None`` the task's own loss is used (the right default). A user loss that
expects probabilities while the model emits logits (Keras's ``from_logits`` trap) is caught at ``compile`` and
explained.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
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
from ..training.loop import RESUME_HINT, plan_steps, train
from ..training.optim import build_optimizer, build_scheduler, default_lr_for
from ..training.settings import FinetuneSettings, TrainSettings
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
    """Per-epoch values, Keras-style: ``history.history["val_accuracy"][epoch]``. ``eval_epochs[i]`` is the epoch at
    which the i-th evaluation (the i-th ``val_*`` value) ran: every epoch unless evaluation was made less frequent."""

    history: dict = field(default_factory=dict)
    epoch: list = field(default_factory=list)
    eval_epochs: list = field(default_factory=list)

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
    """Mean training loss per epoch, and the validation metrics of each evaluation. Its state goes into step
    checkpoints (``state_key``), so a resumed fine-tuning run reports every epoch, not only those after the resume."""

    state_key = "epoch_history"

    def __init__(self, history: History):
        self.history = history
        self.losses: list[float] = []

    def on_step_end(self, state, logs):
        self.losses.append(state.last_loss)
        if state.step % state.steps_per_epoch == 0 or state.step == state.max_steps:
            self.history.history.setdefault("loss", []).append(float(np.mean(self.losses)))
            # Methods that freeze or unfreeze (linear probe, gradual unfreezing) show here what really trained.
            self.history.history.setdefault("trainable_params", []).append(trainable_parameters(state.module))
            self.history.epoch.append(round(state.epoch, 4))
            self.losses = []

    def on_eval_end(self, state, metrics):
        for k, v in metrics.items():
            self.history.history.setdefault(f"val_{k}", []).append(v)
        self.history.eval_epochs.append(round(state.epoch, 4))

    def state_dict(self) -> dict:
        return {"history": self.history.history, "epoch": self.history.epoch,
                "eval_epochs": self.history.eval_epochs, "losses": self.losses}

    def load_state_dict(self, saved: dict) -> None:
        self.history.history = saved["history"]
        self.history.epoch, self.history.eval_epochs = saved["epoch"], saved.get("eval_epochs", [])
        self.losses = saved["losses"]


class _Clock(Callback):
    """The loop's state, for an evaluation function that needs to know whether it is the last one."""

    state = None

    def on_fit_start(self, state):
        self.state = state


@dataclass
class Compiled:
    """What ``compile`` stored: the optimizer (a name, an instance or a factory), the loss (None: the task's own),
    the metrics (the first one picks the best epoch) and the training settings."""

    optimizer: object
    loss: object
    metrics: list[str]
    settings: FinetuneSettings


def compiled_settings(settings: TrainSettings | None, overrides: dict, default_lr) -> FinetuneSettings:
    """The training settings a model's ``compile`` stores: ``settings`` (any training settings; None: fine-tuning's
    defaults) with ``overrides`` by keyword, each checked with the messages the command line gives; an lr left None
    becomes ``default_lr()`` (the model's: ``default_lr_for``)."""
    unknown = sorted(set(overrides) - {f.name for f in fields(FinetuneSettings)})
    if unknown:
        raise UserError(f"compile() got unknown setting(s) {', '.join(unknown)}; the training settings are "
                        f"{', '.join(f.name for f in fields(FinetuneSettings))}.")
    base = FinetuneSettings.of(settings) if settings is not None else FinetuneSettings()
    settings = replace(base, **overrides)  # validated again, field by field
    return settings if settings.lr is not None else replace(settings, lr=default_lr())


class TransferModel:
    """A task module + its preprocessor (``inputs``: a tokenizer, an image preprocessor), with the Keras workflow.
    Get one from ``from_pretrained``; it reads texts, images and files of its own modality."""

    def __init__(self, module, inputs, report=None, max_len: int = 128, pairs: bool | None = None):
        self.module, self.inputs, self.report = module, inputs, report
        positions = getattr(module.config, "max_len", max_len)
        self.max_len = min(max_len, positions)
        # A model reads at most its position table: a longer max_len is cut to it, and this says so.
        self.max_len_note = (f"max_len {max_len} is more than the {positions} positions of this checkpoint: texts "
                             f"are cut at {positions} tokens" if max_len > positions else None)
        self.pairs = pairs  # text: whether it was fine-tuned on sentence pairs (None: not known yet)
        self.compiled: Compiled | None = None
        self.method = None  # a transfer.methods.TransferMethod once compile(method=...) ran

    @property
    def tokenizer(self):
        """The text preprocessor (None for other modalities)."""
        return self.inputs if self.inputs.modality == "text" else None

    @property
    def problem(self) -> str:
        return self.module.problem

    def compile(self, optimizer=None, loss=None, metrics=None, method: str | None = None,
                method_options: dict | None = None, settings: TrainSettings | None = None, **overrides):
        """``optimizer``: "adamw"/"adam"/"sgd"/"muon" (the settings' ``optimizer`` field), a torch optimizer over
        ``model.parameters()``, or a callable ``params -> optimizer``; None: the settings' (adamw by default).
        ``method``: "finetune", "linear-probe", "gradual-unfreeze" or "lora" (``transfer.methods.apply_method``;
        ``method_options`` such as ``{"lora_rank": 8}``); None keeps the model's trainable set as it is.

        The training settings are a ``FinetuneSettings`` (3 epochs, 10% linear warm-up, ...): start from
        ``settings`` (any training settings, e.g. a ``FinetuneConfig``) and change fields by keyword, e.g.
        ``compile(lr=1e-3, schedule="cosine", warmup=0.06, precision="fp32", clip=1.0)``. Every value is checked
        here, with the messages the command line gives. ``lr`` None (the default) is chosen from the model: for
        text, ``default_finetune_lr`` of its width (BERT-base's 5e-5 left the tiny preset at chance); other
        modalities 5e-5. ``compiled.settings.lr`` says what was chosen."""
        metrics = list(metrics) if metrics else self.default_metrics()
        check_metrics_fit_task(metrics, self.problem)
        settings = compiled_settings(settings, overrides, self.default_lr)
        if loss is not None:
            check_loss(loss, self.problem, self.module.num_labels)
        if method is not None:
            self.method = apply_method(self.module, method, **(method_options or {}))
        if isinstance(optimizer, str):
            settings = replace(settings, optimizer=optimizer)  # checked as --optimizer is
        self.compiled = Compiled(settings.optimizer if optimizer is None or isinstance(optimizer, str) else optimizer,
                                 loss, metrics, settings)
        return self

    @property
    def _precision(self) -> str:
        """evaluate/predict compute in the precision the model was compiled to train in ("auto" by default); an
        int8-quantized model in fp32 around its int8 matmuls (tasks.quantize)."""
        if getattr(self.module, "quantization", None):
            return "fp32"
        return self.compiled.settings.precision if self.compiled is not None else "auto"

    def default_lr(self) -> float:
        """The fine-tuning learning rate used when none is given: from the width for text models
        (``training.optim.default_finetune_lr``), 5e-5 for other modalities."""
        return default_lr_for(self.inputs.modality, getattr(self.module.config, "d_model", None))

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
        if self.inputs.modality == "text" and self.pairs is not None and data.is_pair != self.pairs:
            had, got = ("sentence pairs (two text columns)", "one text column") if self.pairs else \
                ("single sentences (one text column)", "two text columns (sentence pairs)")
            raise UserError(f"this model was fine-tuned on {had}, but {data.source} gives it {got}; its scores "
                            f"would mean nothing. Name the columns it was trained on with --text-cols (text_cols= "
                            f"in Python), or use a model fine-tuned on this kind of input.")
        if data.labels is not None and self.problem == "classification":
            bad = [(line, lab) for line, lab in zip(data.lines, data.labels)
                   if not 0 <= int(lab) < self.module.num_labels]
            if bad:
                raise UserError(f"{data.source}:{bad[0][0]}: label {bad[0][1]} is outside the model's "
                                f"{self.module.num_labels} labels; fix the data or use --num-labels.")
        return self.inputs.examples(data, self.module.config, self.max_len, augment=augment)

    # ---- Keras API ----
    def fit(self, x, y=None, validation_data=None, epochs: float | None = None, batch_size: int | None = None,
            callbacks: list[Callback] | None = None, seed: int | None = None, run_dir: str | Path | None = None,
            verbose: bool | None = None, resume: bool = False, device: str | None = None,
            distributed: str | None = None, augment=None, resume_hint: str = RESUME_HINT, started=None) -> History:
        """Train on ``x``: a file or folder, a labeled set, texts (or images as an array) with labels ``y``.

        ``epochs``, ``batch_size``, ``seed``, ``device``, ``distributed`` and ``verbose`` (the progress bar)
        override the compiled settings for this call (None keeps them). ``augment`` (images): a recipe name,
        overrides or an ``AugmentConfig`` (``data.augment``) applied to every training batch, seeded by the seed
        and the step; None trains on the images as they are. With ``run_dir``, ``resume=True`` continues from its
        newest step checkpoint; ``resume_hint`` / ``started`` as ``training.loop.train`` takes them."""
        if getattr(self.module, "quantization", None):
            raise UserError("this model is an int8 export, for inference only (evaluate, predict); fine-tune the "
                            "fp32 model it was exported from and export it again.")
        if self.compiled is None:
            self.compile()
        c = self.compiled
        given = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device,
                 "distributed": distributed, "progress": verbose}
        s = replace(c.settings, **{k: v for k, v in given.items() if v is not None})
        check_distributed(self.method.name if self.method else None, s.distributed)
        rank, world_size = world()  # under torchrun each rank trains on its slice of every batch
        train_set = self._labeled(x, y, require_labels=True)
        if self.inputs.modality == "text":
            self.pairs = train_set.is_pair
        train_data = ExampleBatches(self._encode(train_set, augment=self._augment(augment)),
                                    s.batch_size // s.grad_accum, s.seed, rank, world_size)
        dev_set = None
        if validation_data is not None:
            dev_set = (self._labeled(*validation_data, split="dev") if isinstance(validation_data, tuple)
                       else self._labeled(validation_data, split="dev"))
        dev, dev_sample = self._validation(dev_set, s)
        module = self.module if c.loss is None else _LossOverride(self.module, c.loss)
        optimizer = c.optimizer
        method_callbacks = self.method.make_callbacks(self.module) if self.method else []
        if isinstance(optimizer, str) and self.method is not None:
            optimizer = self.method.optimizer(self.module, s.lr, s.weight_decay, name=optimizer)
        elif isinstance(optimizer, str):
            optimizer = build_optimizer(module, s.lr, s.weight_decay, name=optimizer)
        elif callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(module.parameters())
        steps, _ = plan_steps(s, train_data.steps_per_epoch)
        schedule = (self.method.schedule if self.method else None) or s.schedule
        scheduler = build_scheduler(optimizer, schedule, steps, s.warmup, s.cooldown)
        history = History()
        user_loss = c.loss
        clock = _Clock()

        def evaluate(_):
            fn = None if user_loss is None else (lambda logits, labels: _call_loss(user_loss, logits, labels))
            state = clock.state
            last = state is None or state.step >= state.max_steps or state.should_stop
            metrics = evaluate_classifier(self.module, dev if last or dev_sample is None else dev_sample,
                                          c.metrics, loss_fn=fn, precision=s.precision)
            if dev_sample is not None:  # say which evaluations scored a sample
                metrics["dev_examples"] = len(dev if last else dev_sample)
            return metrics

        recorder = _EpochHistory(history)
        extra = {"label_names": self.module.label_names, "max_len": self.max_len,
                 **({"pairs": self.pairs} if self.pairs is not None else {})}
        # the method's callbacks come last: at the end of training the user's (e.g. EarlyStopping restoring the best
        # weights) must see the module they trained, before LoRA's adapters are merged into it
        train(module, train_data, s, evaluate=evaluate if dev is not None else None, run_dir=run_dir,
              inputs=self.inputs, extra_config=extra,
              callbacks=[clock, recorder, *(callbacks or []), *method_callbacks], optimizer=optimizer,
              scheduler=scheduler, resume=resume, resume_hint=resume_hint, started=started)
        return history

    def _validation(self, dev_set, s: FinetuneSettings):
        """(every dev example encoded, the seeded sample scored at intermediate evaluations or None)."""
        if dev_set is None:
            return None, None
        dev = self._encode(dev_set)
        if not s.eval_sample or s.eval_sample >= len(dev_set):
            return dev, None
        from ..data.sampling import stratified_sample

        # Drawn once, stratified by class so a rare class is not left out; the same seed gives the same sample.
        idx = stratified_sample(np.asarray(dev_set.labels), s.eval_sample, s.seed, self.problem)
        return dev, self._encode(dev_set.subset(idx))

    def _augment(self, augment):
        if augment is None:
            return None
        if self.inputs.modality != "image":
            raise UserError(f"augment= applies to image models; this one reads {self.inputs.modality}.")
        from ..data.augment import Augment, augment_config

        return Augment(augment_config(augment))

    def evaluate(self, x, y=None, batch_size: int = 64) -> dict:
        metrics = self.compiled.metrics if self.compiled is not None else self.default_metrics()
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
        broken = ~torch.isfinite(logits).reshape(len(logits), -1).all(-1)
        if bool(broken.any()):
            first = int(torch.nonzero(broken)[0])
            raise UserError(f"the model's scores are NaN or infinite for {int(broken.sum())} of {len(logits)} "
                            f"examples of {data.source} (the first on line {data.lines[first]}), so no prediction "
                            f"can be made for them: its weights are broken (a run that diverged?). Retrain it, e.g. "
                            f"with a lower --lr or --precision fp32.")
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
                               extra={"label_names": self.module.label_names, "max_len": self.max_len,
                                      **({"pairs": self.pairs} if self.pairs is not None else {})})
