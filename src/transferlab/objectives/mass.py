"""MASS (Song et al. 2019): mask one contiguous span of about half the sentence in the encoder input; the
decoder predicts that span, seeing only its own previous span tokens (and their positions in the sentence).

The corruption is one gather/scatter over the batch: every block has the same length, so every row's span has
the same length ``round(span x T)`` and only its start differs (uniform over the block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .seq2seq_lm import Seq2SeqLM


@dataclass
class MassCorruption:
    """blocks (B, T) -> encoder input with a span of [MASK]s, decoder input/targets = the span (B, k)."""

    mask_id: int
    bos_id: int
    span: float = 0.5

    def __post_init__(self):
        if not 0 < self.span < 1:
            raise UserError(f"--noise span={self.span}: the MASS span is a fraction of the sequence and must be in "
                            f"(0, 1); the paper uses 0.5.")

    def span_len(self, T: int) -> int:
        return min(T, max(1, round(self.span * T)))

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        B, T = blocks.shape
        k = self.span_len(T)
        start = torch.randint(0, T - k + 1, (B, 1), generator=generator)
        positions = start + torch.arange(k)  # (B, k) positions of the span in the block
        target = blocks.gather(1, positions)
        encoder_input = blocks.scatter(1, positions, self.mask_id)
        # The decoder sees the span shifted right behind [BOS], at the span's own positions (the paper's figure).
        decoder_input = torch.cat([torch.full((B, 1), self.bos_id, dtype=blocks.dtype), target[:, :-1]], 1)
        return {"input_ids": encoder_input, "decoder_input_ids": decoder_input, "decoder_positions": positions,
                "labels": target}

    def block_len(self, seq_len: int) -> int:
        return seq_len


class MassLM(Seq2SeqLM):
    kind = "mass"
