"""Transfer: head swap from a pretrained directory, and the Keras-style facade."""

from __future__ import annotations

import sys
from pathlib import Path

from .facade import History, MeanSquaredError, SparseCategoricalCrossentropy, TransferModel
from .multitask import MultiTaskModel
from .pretrained import TransferReport, build_transfer, load_model


def from_pretrained(directory: str | Path, task: str = "classification", num_labels: int | None = None,
                    label_names: list[str] | None = None, init: str = "pretrained", pooling: str | None = None,
                    seed: int = 0, max_len: int = 128, verbose: bool = True, dropout: float | str | None = "auto",
                    channels: int | None = None, image_size: tuple[int, int] | None = None, heads=None,
                    keep_heads: tuple[str, ...] | list[str] = (), weighting: str = "equal"):
    """Keep the backbone of ``directory``, drop its pretraining head, add a fresh ``task`` head (or, with
    ``heads``, one fresh head per task: a ``MultiTaskModel``).

    Args:
        directory: a checkpoint directory (``RUN/final``) from pretraining or an earlier fine-tuning.
        task: "classification" (single sentences or pairs, images) or "regression".
        num_labels / label_names: size (and names) of the new head's label set. Left out on a fine-tuned
            directory, the trained head is kept (fine-tuning continues from it: the same as ``load(directory)``);
            given, it is replaced by a fresh head, and the report says so in words.
        init: "pretrained", or "scratch" for the identical architecture with random weights (the baseline).
        seed: seeds the fresh head (and, for scratch, the whole model).
        max_len: longest token sequence (text); more than the checkpoint's positions is cut to them (and said).
        dropout: dropout while fine-tuning: "auto" (0.1 for text, whose pretraining runs without it; an image
            checkpoint's own), a rate, or None (the checkpoint's own).
        channels / image_size: for an image checkpoint, the input your data has when it differs from the
            checkpoint's: the first convolution is adapted (timm's rule: a grayscale model sums the RGB filters)
            and a ViT's position table resampled; the report says so.
        heads: multi-task: task name -> a number of classes, "regression", or {"kind": "multilabel",
            "num_labels": K} (``transfer.multitask.head_specs``); ``task`` and ``num_labels`` are then unused.
        keep_heads: with ``heads``, heads of a multi-task checkpoint to carry over rather than make fresh.
        weighting: with ``heads``, how task losses combine: "equal", "uncertainty" or "pcgrad".
    Returns:
        a ``TransferModel`` with compile / fit / evaluate / predict / save (a ``MultiTaskModel`` with ``heads``);
        ``.report`` lists dropped and new keys.
    """
    if heads is not None:
        from .multitask import multitask_from_pretrained

        return multitask_from_pretrained(directory, heads, init=init, keep_heads=keep_heads, pooling=pooling,
                                         weighting=weighting, seed=seed, max_len=max_len, verbose=verbose,
                                         dropout=dropout, channels=channels, image_size=image_size)
    if task == "seq2seq":
        from ..errors import UserError

        raise UserError("a seq2seq head is fine-tuned on text pairs with `transferlab seq2seq train` or "
                        "transferlab.recipes.seq2seq.finetune_seq2seq (build one with "
                        "transferlab.transfer.build_transfer(dir, task='seq2seq')); the Keras-style model "
                        "classifies and regresses.")
    from ..training.checkpoint import load_config

    config = load_config(directory)
    trained = config["task"].get("kind") if config["task"].get("kind") in ("classification", "regression") else None
    if (trained == task and init == "pretrained" and num_labels is None and channels is None and image_size is None
            and label_names in (None, config.get("label_names"))):
        model = load(directory, max_len=max_len)
        names = config.get("label_names")
        model.report = TransferReport(str(directory), init, loaded=sorted(model.module.state_dict()), notes=[
            f"kept the trained {trained} head" + (f" (labels {', '.join(map(str, names))})" if names else "") +
            ": fine-tuning continues from it; pass num_labels= or label_names= for a fresh head"])
        if verbose:
            print(f"{directory} is a fine-tuned model: {model.report.notes[0]}.", file=sys.stderr)
        if pooling is not None and pooling != config["task"].get("pooling"):
            from ..errors import UserError

            raise UserError(f"pooling='{pooling}' would change how the trained head of '{directory}' reads the "
                            f"sequence (it was trained with {config['task'].get('pooling') or 'the default'}); pass "
                            f"num_labels= for a fresh head with that pooling.")
        if model.max_len_note and verbose:
            print(f"note: {model.max_len_note}.", file=sys.stderr)
        return model
    module, inputs, report = build_transfer(directory, task, num_labels, label_names, init, pooling, seed,
                                            verbose, dropout, channels, image_size)
    if trained and init == "pretrained":
        names = config.get("label_names")
        what = f"the trained {trained} head of '{directory}'" + (f" (labels {', '.join(map(str, names))})"
                                                                  if names else "")
        note = (f"{what} was dropped: the new model has a fresh head that starts from random weights. To keep the "
                f"trained head instead, call from_pretrained('{directory}') without num_labels and label_names, or "
                f"transferlab.load('{directory}').")
        report.notes.append(note)
        if verbose:
            print(note, file=sys.stderr)
        else:
            import warnings

            warnings.warn(note, stacklevel=2)
    model = TransferModel(module, inputs, report, max_len)
    if model.max_len_note and verbose:
        print(f"note: {model.max_len_note}.", file=sys.stderr)
    return model


def load(directory: str | Path, max_len: int | None = None) -> TransferModel:
    """Open a fine-tuned directory as it was saved (head included), for evaluate / predict, or to fine-tune further.

    Args:
        directory: a fine-tuning run's ``final/`` (or a ``model.save(...)`` directory).
        max_len: longest token sequence (text); None uses the one it was fine-tuned with.
    """
    module, inputs, config = load_model(directory)
    if config["task"]["kind"] == "multitask":
        from .multitask import MultiTaskModel

        return MultiTaskModel(module, inputs, max_len=config.get("max_len", 128))
    if not hasattr(module, "problem"):
        from ..errors import UserError

        if config["task"]["kind"] == "seq2seq":
            raise UserError(f"'{directory}' holds a fine-tuned seq2seq model; run it with `transferlab seq2seq "
                            f"generate --model {directory} --data FILE --source-col ...` (BLEU with --target-col).")

        raise UserError(f"'{directory}' holds a '{config['task']['kind']}' pretraining checkpoint, not a fine-tuned "
                        f"model; fine-tune it first (`transferlab finetune --init {directory}`).")
    return TransferModel(module, inputs, max_len=max_len or config.get("max_len", 128), pairs=config.get("pairs"))


__all__ = ["from_pretrained", "load", "build_transfer", "TransferModel", "MultiTaskModel", "History", "TransferReport",
           "SparseCategoricalCrossentropy", "MeanSquaredError"]
