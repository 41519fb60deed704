"""MPNet: permuted language modeling that also sees the positions of the predicted tokens.

Like XLNet (``plm.py``), predicted tokens come last in a random factorisation order and the query stream never
sees its own token. Unlike XLNet, each query also sees [MASK] tokens placed at the positions of itself and of
every later predicted token ("position compensation", Song et al. 2020): together with the earlier predicted
tokens, which it sees through the content stream, a query knows the positions of the whole sentence, as a BERT
would, so pretraining and fine-tuning agree on how many tokens there are and where they stand.

The query stream's inputs are the predicted tokens after BERT's 80/10/10 replacement (``mlm.replace_80_10_10``):
80% [MASK], 10% a random token, 10% unchanged; 15% of the ordinary tokens are predicted (``mlm.select_tokens``).
The query mask covers T + P keys: the T content positions, then the P query slots.
"""

from __future__ import annotations

import torch

from ..heads import LMHead
from .base import TaskModule, require_family
from .mlm import IGNORE, MLMCorruption, replace_80_10_10, select_tokens
from .plm import factorisation_order, predict_slots, two_stream_masks, with_cls


def compensation_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, P, P) bool: query slot p sees the [MASK] of slot q iff q is p itself or later in the order."""
    P = valid.shape[1]
    later = torch.arange(P)[None, :] >= torch.arange(P)[:, None]
    return later & valid[:, None, :] & valid[:, :, None]


class MPNetCorruption(MLMCorruption):
    """blocks (B, T-1) -> batch for ``MPNet``: clean tokens (with [CLS]), content mask (B, 1, T, T), query mask
    (B, 1, P, T + P), predicted positions in factorisation order, the query stream's (80/10/10) tokens, labels."""

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        ids = with_cls(blocks, self.cls_id)
        targets = select_tokens(ids, self.mask_prob, generator)
        replaced = replace_80_10_10(ids, targets, self.vocab_size, self.mask_id, generator)
        rank, positions, valid = factorisation_order(targets, generator)
        content_mask, query_mask = two_stream_masks(rank, positions, valid)
        query_mask = torch.cat([query_mask, compensation_mask(valid)[:, None]], -1)
        return {"input_ids": ids, "content_mask": content_mask, "query_mask": query_mask,
                "target_positions": positions, "query_ids": replaced.gather(1, positions),
                "labels": ids.gather(1, positions).masked_fill(~valid, IGNORE), "perm_rank": rank}


class MPNet(TaskModule):
    kind = "mpnet"

    def __init__(self, backbone):
        require_family(backbone, self.kind, ("encoder",))
        super().__init__(backbone)
        self.heads["lm"] = LMHead(backbone.config, backbone.wte)

    def forward(self, batch: dict) -> dict:
        g = self.backbone.two_stream(batch["input_ids"], batch["content_mask"], self.backbone.wte(batch["query_ids"]),
                                     batch["target_positions"], batch["query_mask"])
        return predict_slots(self.heads["lm"], g, batch["labels"])
