"""Building task modules from checkpoint directories, and transfer by head swap.

``from_pretrained(dir, task=..., num_labels=k)`` keeps ``backbone.*``, drops every pretraining head, creates a
fresh head, and reports exactly which keys were dropped and which are new. ``init="scratch"`` builds the
identical architecture with random weights: the honest baseline.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..models import ModelConfig, build_backbone
from ..objectives import OBJECTIVES
from ..objectives.seq2seq_lm import Seq2SeqLM
from ..tasks import TASKS, SequenceClassifier
from ..tokenization import Tokenizer
from ..training.checkpoint import check_weights, load_config, load_weights

INITS = ("pretrained", "scratch")


@dataclass
class TransferReport:
    source: str
    init: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.init == "scratch":
            return (f"initialised from scratch: the architecture of {self.source}, random weights "
                    f"({len(self.new)} tensors).")
        lines = [f"transferred {len(self.loaded)} backbone tensors from {self.source}"]
        lines.append(f"  dropped (pretraining head): {', '.join(self.dropped) or 'none'}")
        lines.append(f"  new (fresh init): {', '.join(self.new) or 'none'}")
        return "\n".join(lines)


def build_task(backbone, task: dict):
    kind = task.get("kind")
    if kind in OBJECTIVES:
        return OBJECTIVES[kind][1](backbone)
    if kind == Seq2SeqLM.kind:  # a fine-tuned seq2seq model: same module as bart/mass pretraining
        return Seq2SeqLM(backbone)
    if kind in TASKS:
        return SequenceClassifier(backbone, task.get("num_labels") or 2, kind, task.get("pooling"),
                                  task.get("label_names"))
    known = ", ".join(list(OBJECTIVES) + list(TASKS))
    raise UserError(f"unknown task '{kind}'; choose one of {known}.")


def load_tokenizer(directory: str | Path, config: dict) -> Tokenizer:
    tokenizer = Tokenizer.load(directory)
    vocab = config["backbone"]["vocab_size"]
    if tokenizer.vocab_size != vocab:
        raise UserError(f"the tokenizer in '{directory}' has {tokenizer.vocab_size} tokens but the model was built "
                        f"for {vocab}; the directory mixes files from different runs. Restore its tokenizer.json.")
    return tokenizer


def load_model(directory: str | Path):
    """Rebuild a module exactly as saved (heads included). Returns (module, tokenizer, config)."""
    config = load_config(directory)
    tokenizer = load_tokenizer(directory, config)
    module = build_task(build_backbone(ModelConfig.from_dict(config["backbone"])), config["task"])
    _load_strict(module, load_weights(directory), directory)
    return module, tokenizer, config


def _load_strict(module, weights: dict, directory) -> None:
    check_weights(module.state_dict(), weights, directory)
    module.load_state_dict(weights)


def build_transfer(directory: str | Path, task: str = "classification", num_labels: int | None = None,
                   label_names: list[str] | None = None, init: str = "pretrained", pooling: str | None = None,
                   seed: int = 0, verbose: bool = True, dropout: float | None = 0.1):
    """Backbone from ``directory`` + a fresh task head. Returns (module, tokenizer, report).

    ``dropout`` replaces the checkpoint's (pretraining runs without it; fine-tuning wants it); None keeps it.
    """
    if init not in INITS:
        raise UserError(f"unknown --init '{init}'; use a checkpoint directory or 'scratch'.")
    if task not in TASKS:
        raise UserError(f"unknown --task '{task}'; choose one of {', '.join(TASKS)}.")
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise UserError(f"num_labels={num_labels} but {len(label_names)} label names were given.")
        num_labels = len(label_names)
    if task == "classification" and (num_labels is None or num_labels < 2):
        raise UserError("classification needs num_labels >= 2 (--num-labels), or label names from the data.")
    config = load_config(directory)
    tokenizer = load_tokenizer(directory, config)
    torch.manual_seed(seed)
    backbone_config = config["backbone"] if dropout is None else {**config["backbone"], "dropout": dropout}
    backbone = build_backbone(ModelConfig.from_dict(backbone_config))
    module = SequenceClassifier(backbone, num_labels or 1, task, pooling, label_names)
    report = TransferReport(str(directory), init)
    if init == "scratch":
        report.new = list(module.state_dict())
    else:
        weights = load_weights(directory)
        kept = {k: v for k, v in weights.items() if k.startswith("backbone.")}
        report.dropped = sorted(k for k in weights if not k.startswith("backbone."))
        check_weights({k: v for k, v in module.state_dict().items() if k.startswith("backbone.")}, kept, directory)
        missing, _ = module.load_state_dict(kept, strict=False)
        report.loaded = sorted(kept)
        report.new = sorted(missing)
    if verbose:
        print(report, file=sys.stderr)
    return module, tokenizer, report
