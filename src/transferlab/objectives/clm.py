"""GPT's causal language model: predict token t+1 from tokens <= t.

The shift happens here, inside the objective: a block of T tokens gives T-1 predictions. End-of-sequence
tokens are real targets (a model must learn where documents end); only padding is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..heads import LMHead
from .base import TaskModule

IGNORE = -100


@dataclass
class CLMCorruption:
    """Causal LM needs no corruption: the packed block is the input and, shifted, the target."""

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        return {"input_ids": blocks}

    def block_len(self, seq_len: int) -> int:
        return seq_len


class CausalLM(TaskModule):
    kind = "clm"

    def __init__(self, backbone):
        super().__init__(backbone)
        self.heads["lm"] = LMHead(backbone.config, backbone.wte)

    def forward(self, batch: dict) -> dict:
        input_ids = batch["input_ids"]
        attention = batch.get("attention")
        hidden = self.backbone(input_ids, attention=attention)
        targets = input_ids[:, 1:]
        if attention is not None:
            targets = targets.masked_fill(attention[:, 1:] == 0, IGNORE)
        loss = self.heads["lm"].loss(hidden[:, :-1].flatten(0, 1), targets.flatten())
        return {"loss": loss, "labels": targets, "n_predictions": int((targets != IGNORE).sum())}
