"""Transfer: head swap from a pretrained directory, and the Keras-style facade."""

from __future__ import annotations

from pathlib import Path

from .facade import History, MeanSquaredError, SparseCategoricalCrossentropy, TransferModel
from .pretrained import TransferReport, build_transfer, load_model


def from_pretrained(directory: str | Path, task: str = "classification", num_labels: int | None = None,
                    label_names: list[str] | None = None, init: str = "pretrained", pooling: str | None = None,
                    seed: int = 0, max_len: int = 128, verbose: bool = True,
                    dropout: float | None = 0.1) -> TransferModel:
    """Keep the backbone of ``directory``, drop its pretraining head, add a fresh ``task`` head.

    Args:
        directory: a checkpoint directory (``RUN/final``) from pretraining or an earlier fine-tuning.
        task: "classification" (single sentences or pairs) or "regression".
        num_labels / label_names: size (and names) of the new head's label set.
        init: "pretrained", or "scratch" for the identical architecture with random weights (the baseline).
        seed: seeds the fresh head (and, for scratch, the whole model).
        dropout: dropout while fine-tuning (pretraining runs without it); None keeps the checkpoint's.
    Returns:
        a ``TransferModel`` with compile / fit / evaluate / predict / save; ``.report`` lists dropped and new keys.
    """
    module, tokenizer, report = build_transfer(directory, task, num_labels, label_names, init, pooling, seed,
                                               verbose, dropout)
    return TransferModel(module, tokenizer, report, max_len)


def load(directory: str | Path) -> TransferModel:
    """Open a fine-tuned directory as it was saved (head included), for evaluate / predict."""
    module, tokenizer, config = load_model(directory)
    if not hasattr(module, "problem"):
        from ..errors import UserError

        if config["task"]["kind"] == "seq2seq":
            raise UserError(f"'{directory}' holds a fine-tuned seq2seq model; run it with `transferlab seq2seq "
                            f"generate --model {directory} --data FILE --source-col ...` (BLEU with --target-col).")

        raise UserError(f"'{directory}' holds a '{config['task']['kind']}' pretraining checkpoint, not a fine-tuned "
                        f"model; fine-tune it first (`transferlab finetune --init {directory}`).")
    return TransferModel(module, tokenizer, max_len=config.get("max_len", 128))


__all__ = ["from_pretrained", "load", "TransferModel", "History", "TransferReport", "SparseCategoricalCrossentropy",
           "MeanSquaredError"]
