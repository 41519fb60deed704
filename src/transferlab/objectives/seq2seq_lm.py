"""The task module every encoder-decoder objective shares: encoder input -> decoder predicts targets.

BART (denoising), MASS and seq2seq fine-tuning differ only in how the batch is built (their corruption or
collate); the module is the same, so a fine-tuned seq2seq model keeps the pretraining LM head (it generates in
the same vocabulary) and only the batch changes.

Batch keys: ``input_ids`` (B, S) encoder input, ``attention`` (B, S) optional padding mask,
``decoder_input_ids`` (B, T) the targets shifted right behind [BOS], ``decoder_positions`` optional (B, T),
``labels`` (B, T) with -100 where nothing is predicted.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..heads import LMHead
from .base import TaskModule

IGNORE = -100


class Seq2SeqLM(TaskModule):
    kind = "seq2seq"
    carried_heads = ("lm",)  # a bart/mass LM head already predicts tokens of this vocabulary: fine-tuning keeps it

    def __init__(self, backbone):
        if backbone.config.family != "encoder_decoder":
            raise UserError(f"the '{self.kind}' task needs an encoder-decoder backbone (family 'encoder_decoder'), "
                            f"but got a '{backbone.config.family}'. Pretrain with --objective bart or mass (which "
                            f"build one), or start from such a checkpoint.")
        super().__init__(backbone)
        self.heads["lm"] = LMHead(backbone.config, backbone.wte)

    def forward(self, batch: dict) -> dict:
        hidden = self.backbone(batch["input_ids"], attention=batch.get("attention"),
                               decoder_input_ids=batch["decoder_input_ids"],
                               decoder_positions=batch.get("decoder_positions"))
        labels = batch["labels"]
        selected = labels != IGNORE
        targets = labels[selected]
        loss = self.heads["lm"].loss(hidden[selected], targets)  # only real targets reach the vocabulary
        return {"loss": loss, "labels": targets, "n_predictions": targets.numel()}

    @torch.no_grad()
    def next_token_logits(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor,
                          attention: torch.Tensor | None) -> torch.Tensor:
        """(B, t) decoder prefix + encoder memory -> (B, V) fp32 logits of the next token (for generation)."""
        hidden = self.backbone.decode(decoder_input_ids, memory, attention)
        return self.heads["lm"](hidden[:, -1]).float()


def shift_right(targets: torch.Tensor, bos_id: int, pad_id: int = 0) -> torch.Tensor:
    """(B, T) targets -> decoder inputs [BOS] + targets[:, :-1] (teacher forcing); ignored targets become pad."""
    prev = targets[:, :-1].masked_fill(targets[:, :-1] == IGNORE, pad_id)
    return torch.cat([torch.full_like(targets[:, :1], bos_id), prev], 1)
