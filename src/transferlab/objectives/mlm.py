"""BERT's masked language model.

``mask_tokens`` is the corruption (pure tensor ops, seeded): each ordinary token is selected with probability
``mask_prob``; of the selected, 80% become [MASK], 10% a random ordinary token, 10% stay. Special tokens are never
selected and never drawn as replacements. ``MaskedLM`` runs the LM head only on selected positions (sparse
prediction: the vocabulary projection is the largest matmul of a small model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import UserError
from ..heads import LMHead
from ..inputs.text import SPECIAL_TOKENS
from .base import TaskModule

IGNORE = -100
N_SPECIAL = len(SPECIAL_TOKENS)


def special_token_mask(vocab_size: int, special_ids: Sequence[int] | None = None) -> torch.Tensor:
    """(V,) bool, True at the tokenizer's special ids (``tokenizer.special_ids``; a converted BERT's sit at 0 and
    100..103). None means transferlab's own layout, ids ``0..N_SPECIAL-1``."""
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[list(range(N_SPECIAL)) if special_ids is None else list(special_ids)] = True
    return special


def mask_tokens(input_ids: torch.Tensor, vocab_size: int, mask_id: int, generator: torch.Generator,
                mask_prob: float = 0.15, special_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (corrupted inputs, labels) where labels are IGNORE except at selected positions."""
    special = special_token_mask(vocab_size, special_ids)
    selected = select_tokens(input_ids, mask_prob, generator, special)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    return replace_80_10_10(input_ids, selected, vocab_size, mask_id, generator, special), labels


def select_tokens(input_ids: torch.Tensor, prob: float, generator: torch.Generator,
                  special: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) bool: each ordinary token independently with probability ``prob``; special tokens never.
    ``special``: a ``special_token_mask``; None means transferlab's own layout."""
    ordinary = input_ids >= N_SPECIAL if special is None else ~special[input_ids]
    selected = (torch.rand(input_ids.shape, generator=generator) < prob) & ordinary
    if not bool(selected.any()) and bool(ordinary.any()):  # keep the loss defined on tiny batches
        first = ordinary.flatten().nonzero()[0]
        selected.view(-1)[first] = True
    return selected


def replace_80_10_10(input_ids: torch.Tensor, selected: torch.Tensor, vocab_size: int, mask_id: int,
                     generator: torch.Generator, special: torch.Tensor | None = None) -> torch.Tensor:
    """BERT's replacement of the ``selected`` positions: 80% [MASK], 10% a random ordinary token, 10% unchanged.
    Also used by MPNet and ELECTRA, so every objective that says "80/10/10" means exactly this."""
    if special is None:
        special = special_token_mask(vocab_size)
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    # Index into the ordinary ids; for ids 0..n-1 special this draws exactly randint(n, vocab_size).
    pool = (~special).nonzero().squeeze(1)
    random_tokens = pool[torch.randint(0, len(pool), input_ids.shape, generator=generator)]
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(to_random, random_tokens, inputs)


@dataclass
class MLMCorruption:
    """blocks (B, T) of packed tokens -> batch for ``MaskedLM``. A [CLS] is put in front, as in BERT."""

    vocab_size: int
    mask_id: int
    cls_id: int
    mask_prob: float = 0.15
    special_ids: tuple[int, ...] | None = None  # tokenizer.special_ids; None: transferlab's ids 0..6

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise UserError(f"--mask-prob must be in (0, 1), got {self.mask_prob}.")

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        inputs, labels = mask_tokens(blocks, self.vocab_size, self.mask_id, generator, self.mask_prob,
                                     special_ids=self.special_ids)
        cls = torch.full((blocks.shape[0], 1), self.cls_id, dtype=blocks.dtype)
        return {"input_ids": torch.cat([cls, inputs], 1),
                "labels": torch.cat([torch.full_like(cls, IGNORE), labels], 1)}

    def block_len(self, seq_len: int) -> int:
        return seq_len - 1


class MaskedLM(TaskModule):
    kind = "mlm"

    def __init__(self, backbone):
        super().__init__(backbone)
        self.heads["lm"] = LMHead(backbone.config, backbone.wte)

    def forward(self, batch: dict) -> dict:
        hidden = self.backbone(batch["input_ids"], attention=batch.get("attention"),
                               token_type_ids=batch.get("token_type_ids"))
        labels = batch["labels"]
        selected = labels != IGNORE
        targets = labels[selected]
        loss = self.heads["lm"].loss(hidden[selected], targets)  # only the masked rows reach the vocabulary
        return {"loss": loss, "labels": targets, "n_predictions": targets.numel()}
