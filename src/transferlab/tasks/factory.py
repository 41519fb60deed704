"""From a checkpoint directory (or a task description) to a task module: the one factory everything above uses.

``load_model(dir)`` rebuilds a module exactly as saved, heads included, with the preprocessor it was trained
with. ``transfer_module(dir, task)`` is the head swap behind ``from_pretrained``: it keeps the backbone (fitted to
new input channels or image size where its family allows), keeps the heads the new task module carries over
(``TaskModule.carried_heads``: seq2seq keeps its LM head), drops every other head, and reports exactly which
weights were loaded, dropped and made fresh. It lives here, below evaluation and transfer, so that probes,
generation and recipes all build modules the same way and imports point one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..inputs import load_inputs, modality
from ..models import build_backbone, config_from_dict
from ..objectives import AUDIO_OBJECTIVES, IMAGE_OBJECTIVES, OBJECTIVES, SELF_SUPERVISED, SUPERVISED
from ..objectives.seq2seq_lm import Seq2SeqLM
from ..training.checkpoint import check_weights, load_config, load_weights
from ..objectives.classification import TASKS, SequenceClassifier
from .multitask import MULTITASK, MultiTaskModule

INITS = ("pretrained", "scratch")
HEAD_KINDS = TASKS + (Seq2SeqLM.kind,)  # what a transfer can put on a backbone (and MULTITASK: several heads)


def build_task(backbone, task: dict):
    """The task module a config.json ``task`` entry describes, on ``backbone`` (fresh heads)."""
    kind = task.get("kind")
    if kind in OBJECTIVES:
        return OBJECTIVES[kind][1](backbone)
    if kind in AUDIO_OBJECTIVES:  # its settings (APC's shift) are recorded beside the kind
        return AUDIO_OBJECTIVES[kind].module(backbone, **{k: v for k, v in task.items() if k != "kind"})
    if kind == Seq2SeqLM.kind:  # a fine-tuned seq2seq model: same module as bart/mass pretraining
        return Seq2SeqLM(backbone)
    if kind in SELF_SUPERVISED:  # simclr, byol, mae: their settings are the rest of the entry
        return IMAGE_OBJECTIVES[kind].module(backbone, **{k: v for k, v in task.items() if k != "kind"})
    if kind == MULTITASK:
        return MultiTaskModule.from_config(backbone, task)
    if kind in TASKS or kind == SUPERVISED:
        problem = "classification" if kind == SUPERVISED else kind
        return SequenceClassifier(backbone, task.get("num_labels") or 2, problem, task.get("pooling"),
                                  task.get("label_names"), kind=kind)
    known = ", ".join(list(OBJECTIVES) + list(SELF_SUPERVISED) + list(AUDIO_OBJECTIVES) + list(HEAD_KINDS) + [MULTITASK])
    raise UserError(f"unknown task '{kind}'; choose one of {known}.")


def load_model(directory: str | Path):
    """Rebuild a module exactly as saved (heads included). Returns (module, inputs, config); ``inputs`` is the
    preprocessor it was trained with (a ``Tokenizer`` for text)."""
    config = load_config(directory)
    inputs = load_inputs(directory, config)
    module = build_task(build_backbone(config_from_dict(config["backbone"])), config["task"])
    weights = load_weights(directory)
    if "quantization" in config:  # an int8 export (tasks.quantize): rebuild the quantized layers, then fill them
        from .quantize import SCHEME, int8_state_dict, load_int8_state_dict, quantize_int8

        if config["quantization"].get("scheme") != SCHEME:
            raise UserError(f"'{directory}' is quantized with '{config['quantization'].get('scheme')}', which this "
                            f"version does not read (it reads {SCHEME}). Export it again from the fine-tuned model.")
        module = quantize_int8(module)
        check_weights(int8_state_dict(module), weights, directory)
        load_int8_state_dict(module, weights)
        return module, inputs, config
    check_weights(module.state_dict(), weights, directory)
    module.load_state_dict(weights)
    return module, inputs, config


@dataclass
class TransferReport:
    source: str
    init: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the backbone was fitted (input channels, image size)
    dropped_what: str = "pretraining head"  # "trained head" when the source was itself fine-tuned

    def __str__(self) -> str:
        if self.init == "scratch":
            return (f"initialised from scratch: the architecture of {self.source}, random weights "
                    f"({len(self.new)} tensors).")
        lines = [f"transferred {len(self.loaded)} tensors from {self.source}"]
        lines.append(f"  dropped ({self.dropped_what}): {', '.join(self.dropped) or 'none'}")
        lines.append(f"  new (fresh init): {', '.join(self.new) or 'none'}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def transfer_module(directory: str | Path, task: dict, init: str = "pretrained", seed: int = 0,
                    backbone_overrides: dict | None = None):
    """The backbone of ``directory`` under a fresh head for ``task`` (a config.json-style task dict: kind,
    num_labels, label_names, pooling). Returns (module, inputs, report).

    Args:
        init: "pretrained", or "scratch" for the identical architecture with random weights (the baseline).
        seed: seeds every fresh weight (the new head; with "scratch", the whole model).
        backbone_overrides: backbone config fields to change (dropout; input channels or image size, which the
            backbone's ``adapt_weights`` then fits the checkpoint's weights to, or refuses).
    """
    if init not in INITS:
        raise UserError(f"unknown --init '{init}'; use a checkpoint directory or 'scratch'.")
    config = load_config(directory)
    inputs = load_inputs(directory, config)
    source_backbone = config["backbone"]
    torch.manual_seed(seed)
    backbone = build_backbone(config_from_dict({**source_backbone, **(backbone_overrides or {})}))
    module = build_task(backbone, task)
    report = TransferReport(str(directory), init)
    if init == "scratch":
        report.new = list(module.state_dict())
        return module, inputs, report
    weights = load_weights(directory)
    own = module.state_dict()
    kept = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    kept, report.notes = backbone.adapt_weights(kept, source_backbone, str(directory))
    kept = {f"backbone.{k}": v for k, v in kept.items()}
    check_weights({k: v for k, v in own.items() if k.startswith("backbone.")}, kept, directory)
    carried = tuple(f"heads.{name}." for name in module.carried_heads)
    kept.update({k: v for k, v in weights.items()
                 if k.startswith(carried) and k in own and own[k].shape == v.shape})
    if task.get("keep_heads"):  # asked for by name (a multi-task transfer): every one must be carried whole
        for name in task["keep_heads"]:
            wanted = [k for k in own if k.startswith(f"heads.{name}.")]
            if not all(k in kept for k in wanted):
                have = sorted({k.split(".")[1] for k in weights if k.startswith("heads.")})
                raise UserError(f"keep_heads: '{directory}' has no head '{name}' of the same shape (its heads: "
                                f"{', '.join(have) or 'none'}); a kept head needs the same task name and number of "
                                f"labels. Drop it from keep_heads to train a fresh one.")
    missing, _ = module.load_state_dict(kept, strict=False)
    report.loaded = sorted(kept)
    report.dropped = sorted(k for k in weights if not k.startswith("backbone.") and k not in kept)
    if config["task"].get("kind") in TASKS:
        report.dropped_what = f"trained {config['task']['kind']} head"
    report.new = sorted(missing)
    return module, inputs, report


def checkpoint_modality(directory: str | Path) -> str:
    """The kind of input a checkpoint directory reads ("text", "image")."""
    return modality(load_config(directory))


def image_adaptation(directory: str | Path, data) -> dict:
    """``from_pretrained`` arguments that fit an image checkpoint to ``data`` (an ``ImageSet``) where its channels
    or (ViT) image size differ; {} for text or when nothing differs."""
    config = load_config(directory)
    if modality(config) != "image":
        return {}
    record = config["inputs"]
    out = {}
    if data.channels != record["channels"]:
        out["channels"] = data.channels
    if tuple(data.size) != tuple(record["size"]):
        out["image_size"] = tuple(data.size)
    return out
