"""word2vec: skip-gram with negative sampling (Mikolov et al. 2013), the context-free baseline.

Every ordinary token is a centre; its context is the ordinary tokens within a radius drawn uniformly from
1..``window`` per centre (word2vec's dynamic window, which weights near words more). Each centre also gets
``negatives`` noise tokens from the unigram distribution raised to 3/4, estimated on the batch itself (the
corruption sees only the batch), and shares them among its context pairs: its negative term is counted once per
pair, which is word2vec's loss with the noise draws reused. Frequent-word subsampling is not done.

The centre ("input") vectors are the backbone's ``wte``: they transfer. The context ("output") vectors are a
pretraining head, initialised at zero as in word2vec, and dropped at transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import TaskModule, require_family
from .mlm import N_SPECIAL


@dataclass
class SkipGramCorruption:
    """blocks (B, T) -> centres (the block), their contexts (B, T, 2 x window) with a validity mask, and
    negatives (B, T, negatives)."""

    vocab_size: int
    window: int = 5
    negatives: int = 5

    def __post_init__(self):
        if self.window < 1 or self.negatives < 1:
            raise UserError(f"word2vec needs window >= 1 and negatives >= 1, got {self.window} and "
                            f"{self.negatives}.")

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        B, T = blocks.shape
        offsets = torch.cat([torch.arange(-self.window, 0), torch.arange(1, self.window + 1)])  # (2w,)
        where = torch.arange(T)[:, None] + offsets  # (T, 2w)
        inside = (where >= 0) & (where < T)
        contexts = blocks[:, where.clamp(0, T - 1)]  # (B, T, 2w)
        radius = torch.randint(1, self.window + 1, (B, T), generator=generator)
        ordinary = blocks >= N_SPECIAL
        valid = inside & (offsets.abs() <= radius[..., None]) & ordinary[..., None] & (contexts >= N_SPECIAL)
        counts = torch.bincount(blocks[ordinary], minlength=self.vocab_size).double()
        if counts.sum() == 0:
            counts[N_SPECIAL:] = 1.0  # a batch of specials only: uniform noise keeps the shapes valid
        noise = torch.multinomial(counts ** 0.75, B * T * self.negatives, replacement=True, generator=generator)
        return {"input_ids": blocks, "contexts": contexts, "context_valid": valid,
                "negatives": noise.view(B, T, self.negatives)}

    def block_len(self, seq_len: int) -> int:
        return seq_len


class SkipGram(TaskModule):
    kind = "word2vec"
    perplexity_of = None  # negative sampling is not a distribution over the vocabulary

    def __init__(self, backbone):
        require_family(backbone, self.kind, ("embedding",))
        super().__init__(backbone)
        cfg = backbone.config
        self.heads["context"] = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.zeros_(self.heads["context"].weight)

    def forward(self, batch: dict) -> dict:
        centre = self.backbone(batch["input_ids"])[:, :, None, :]  # (B, T, 1, C)
        out = self.heads["context"]
        valid = batch["context_valid"]
        positive = (centre * out(batch["contexts"])).sum(-1)  # (B, T, 2w)
        negative = (centre * out(batch["negatives"])).sum(-1)  # (B, T, k)
        pairs = valid.sum(-1)  # (B, T) context pairs per centre
        n = pairs.sum().clamp(min=1)
        loss = (-F.logsigmoid(positive)[valid].sum()
                + (-F.logsigmoid(-negative).sum(-1) * pairs).sum()) / n
        return {"loss": loss, "n_predictions": int(n)}
