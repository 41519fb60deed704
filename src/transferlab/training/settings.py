"""The training settings, declared once: every field's type, default, unit, help and allowed range in one place.

``TrainSettings`` is what the one loop reads. The recipe configs (``PretrainConfig``, ``FinetuneConfig``,
``Seq2SeqConfig``) inherit it, so a recipe config *is* a set of training settings plus its data and model fields,
keeps the flat keyword API (``PretrainConfig(corpus=..., steps=..., lr=...)``) and goes to the loop as it is.
``FinetuneSettings`` holds fine-tuning's defaults; the Keras-style ``compile`` stores one, and compare's grid
settings derive from it. The command line is generated from these fields (``cli_args.py``).

Nothing heavy is imported at module level (``transferlab --help`` builds its options from here); the device check
imports torch when a device other than the CPU is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Settings, option, option_like

SCHEDULES = ("linear", "cosine", "constant", "slanted", "wsd")
PRECISIONS = ("auto", "bf16", "fp32")
STRATEGIES = ("ddp", "fsdp")  # under torchrun: a model copy per process, or parameters sharded (fsdp.py)
ON_NAN = ("stop", "skip")
# build_optimizer (optim.py) knows these; muon: Muon for the trunk's matrices, AdamW for the rest.
OPTIMIZERS = ("adamw", "adam", "sgd", "muon")
# What a time budget (budget.py) counts: the wall clock, or the process's CPU time.
BUDGET_CLOCKS = ("wall", "cpu")
# A run.json written before --optimizer existed: that run trained with AdamW (resuming it compares against this).
BEFORE_OPTIMIZER = {"optimizer": "adamw"}


def _warmup_rule(value: float) -> str | None:
    if value >= 1 and not float(value).is_integer():
        return (f"must be a whole number from 1 on, where it counts steps, got {value} (below 1 it is a fraction of "
                f"the run, e.g. 0.1)")
    return None


@dataclass
class TrainSettings(Settings):
    """How the one loop trains: length, optimizer, schedule, precision, logging, evaluation and checkpoints."""

    steps: int | None = option(None, "optimizer steps to run (wins over --epochs)", unit="steps", at_least=1,
                               default_text="from --epochs")
    epochs: float | None = option(None, "passes over the training data (may be fractional)", unit="epochs",
                                  above=0, default_text="from --steps")
    batch_size: int = option(32, "examples per optimizer step, summed over data-parallel processes and "
                                 "--grad-accum micro-batches", unit="examples", at_least=1)
    grad_accum: int = option(1, "micro-batches whose gradients are summed before each optimizer step (--batch-size "
                                "is split into this many)", at_least=1)
    lr: float = option(5e-4, "peak learning rate", above=0)
    optimizer: str = option("adamw", "adamw, adam, sgd, or muon (Muon for the 2-D weights inside the backbone's "
                                     "blocks, AdamW for embeddings, norms, biases and heads; not under fsdp)",
                            choices=OPTIMIZERS)
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms)", at_least=0)
    warmup: float = option(0.06, "learning-rate warm-up: below 1 a fraction of all steps, from 1 on a number of "
                                 "steps", at_least=0, rule=_warmup_rule)
    schedule: str = option("linear", "learning rate after warm-up: linear decay to 0, cosine, constant, slanted "
                                     "(ULMFiT's triangle), or wsd (warm-up, stable, decay: constant, then linear to 0 "
                                     "over the last --cooldown of the run)", choices=SCHEDULES)
    cooldown: float = option(0.2, "wsd: the fraction of the run, at its end, over which the learning rate decays to 0",
                             above=0, at_most=1)
    clip: float = option(1.0, "gradient-norm clipping threshold (0 turns clipping off)", at_least=0)
    precision: str = option("auto", "auto (bf16 autocast where the hardware runs it natively, else fp32), bf16 or "
                                    "fp32; weights, optimizer state and loss stay fp32", choices=PRECISIONS)
    device: str = option("cpu", "where to train: cpu, cuda, cuda:N (under torchrun, cuda is each process's own GPU)")
    seed: int = option(0, "seed of the fresh weights, the data order and the corruption")
    log_every: int | None = option(None, "steps between training log lines", unit="steps", at_least=1,
                                   default_text="4 times per epoch, or every 10 steps")
    eval_every: int | None = option(None, "steps between evaluations (the end of the run is always evaluated)",
                                    unit="steps", at_least=1, default_text="once per epoch, or 10 times per run")
    save_every: int | None = option(None, "steps between resumable step checkpoints (RUN/step-N)", unit="steps",
                                    at_least=1, default_text="none: only final/ (Ctrl-C still saves one)")
    keep_checkpoints: int = option(2, "newest step checkpoints kept; older ones are deleted (0 keeps all)",
                                   at_least=0)
    on_nan: str = option("stop", "on a NaN or infinite loss or gradient: stop (keeping the last good checkpoint) or "
                                 "skip the batch (counted in metrics.jsonl)", choices=ON_NAN)
    max_nan_skips: int = option(10, "with --on-nan skip: stop when more than this many batches in a row are bad",
                                at_least=1)
    distributed: str = option("ddp", "under torchrun with several processes: ddp (a model copy per process) or fsdp "
                                     "(parameters, gradients and optimizer state sharded, for models too big for "
                                     "one device); checkpoints are the same either way", choices=STRATEGIES)
    progress: bool = option(True, "no progress bar or log lines", flag="--quiet", negate=True)

    def check(self) -> None:
        super().check()
        if self.batch_size % self.grad_accum:
            raise self.error("batch_size", f"must be divisible by --grad-accum {self.grad_accum}, got "
                                           f"{self.batch_size} (each optimizer step sums that many equal "
                                           f"micro-batches)")
        if self.device != "cpu":
            check_device(self)


TrainSettings.section = "training (the same for every recipe)"


def check_device(settings: TrainSettings) -> None:
    """Refuse a device that is not there, before any data is read."""
    import torch

    try:
        device = torch.device(settings.device)
    except (RuntimeError, ValueError):
        raise settings.error("device", f"'{settings.device}' is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise settings.error("device", f"'{settings.device}' is not available: this machine has no CUDA GPU "
                                           f"torch can use; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise settings.error("device", f"'{settings.device}' is not available: this machine has "
                                           f"{torch.cuda.device_count()} GPU(s), cuda:0 to "
                                           f"cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise settings.error("device", "'mps' is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise settings.error("device", f"'{settings.device}' is not a device transferlab trains on; use cpu, cuda "
                                       f"or cuda:N")


@dataclass
class FinetuneSettings(TrainSettings, defaults={"epochs": 3, "warmup": 0.1}):
    """Fine-tuning's training settings (BERT's recipe: 3 epochs, 10% warm-up), plus a seeded dev sample for the
    intermediate evaluations of a large dev set. The learning rate follows the model's width unless given (None here,
    chosen where the model is known: ``TransferModel.compile`` with ``training.optim.default_finetune_lr``)."""

    lr: float | None = option_like(TrainSettings, "lr",
                                   default_text="from the model width: 1e-3 at d_model 128 down to 5e-5 at 768 and "
                                                "above; 5e-5 for images")

    eval_sample: int | None = option(None, "dev examples (a seeded sample, drawn once) scored at intermediate "
                                           "evaluations; the final evaluation always scores every example",
                                     unit="examples", at_least=1, default_text="every example, every time")


FinetuneSettings.section = "evaluation while fine-tuning"
