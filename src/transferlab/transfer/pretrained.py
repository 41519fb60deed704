"""Transfer by head swap: the one path behind ``from_pretrained``, ``finetune --init`` and ``seq2seq train``.

``build_transfer(dir, task=..., num_labels=k)`` keeps ``backbone.*`` (fitted to new input channels or image size
where the backbone allows), drops every pretraining head, creates a fresh head, and reports exactly which keys were
loaded, dropped and made fresh (``tasks.factory.transfer_module`` does the work). ``init="scratch"`` builds the
identical architecture with random weights: the honest baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..tasks.factory import HEAD_KINDS, INITS, TransferReport, load_model, transfer_module

# Dropout while fine-tuning, per modality, when the caller does not choose: pretraining here runs without it
# (short CPU runs underfit), fine-tuning a text transformer wants BERT's 0.1, and so does an audio transformer
# (HuBERT's and AST's fine-tuning recipes); image backbones keep the checkpoint's own (their head dropout, 0 by
# default, as ResNet and ViT fine-tuning recipes have it).
FINETUNE_DROPOUT = {"text": 0.1, "audio": 0.1}

__all__ = ["INITS", "TransferReport", "build_transfer", "load_model"]


def build_transfer(directory: str | Path, task: str = "classification", num_labels: int | None = None,
                   label_names: list[str] | None = None, init: str = "pretrained", pooling: str | None = None,
                   seed: int = 0, verbose: bool = True, dropout: float | str | None = "auto",
                   channels: int | None = None, image_size: tuple[int, int] | None = None,
                   task_spec: dict | None = None):
    """Backbone from ``directory`` + a fresh ``task`` head. Returns (module, inputs, report).

    Args:
        task: "classification", "regression" or "seq2seq" (an encoder-decoder keeps its LM head).
        dropout: "auto" (0.1 for text, the checkpoint's own otherwise), a rate, or None (the checkpoint's own).
        channels / image_size: image checkpoints only: the input the new model must read, when it differs from
            the checkpoint's (the first convolution and the position table are fitted, and the report says how).
        task_spec: the whole config.json-style task dict instead of one head (``task="multitask"``: several heads,
            ``transfer.multitask``).
    """
    if task_spec is None and task not in HEAD_KINDS:
        raise UserError(f"unknown --task '{task}'; choose one of {', '.join(HEAD_KINDS)}.")
    if label_names is not None:
        if num_labels is not None and num_labels != len(label_names):
            raise UserError(f"num_labels={num_labels} but {len(label_names)} label names were given.")
        num_labels = len(label_names)
    if task == "classification" and task_spec is None and (num_labels is None or num_labels < 2):
        raise UserError("classification needs num_labels >= 2 (--num-labels), or label names from the data.")
    from ..inputs import modality
    from ..training.checkpoint import load_config

    config = load_config(directory)
    kind = modality(config)
    overrides = {}
    if dropout == "auto":
        dropout = FINETUNE_DROPOUT.get(kind)
    if dropout is not None:
        overrides["dropout"] = dropout
    if channels is not None or image_size is not None:
        if kind != "image":
            raise UserError(f"channels / image_size adapt image checkpoints, but '{directory}' is a {kind} model.")
        if channels is not None:
            overrides["in_channels"] = channels
        if image_size is not None and "image_size" in config["backbone"]:  # a ViT's positions; a ResNet takes any size
            overrides["image_size"] = tuple(image_size)
    head = task_spec or {"kind": task, "num_labels": num_labels or 1, "label_names": label_names, "pooling": pooling}
    module, inputs, report = transfer_module(directory, head, init, seed, overrides)
    if channels is not None or image_size is not None:
        inputs = inputs.adapted(channels=channels, size=image_size)
    if verbose:
        print(report, file=sys.stderr)
    return module, inputs, report
