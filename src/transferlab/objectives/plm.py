"""XLNet's permutation language model, with partial prediction and two-stream attention.

A factorisation order is a random permutation of the positions; each predicted token is predicted from the
tokens that come before it in that order, wherever they stand in the sequence. With partial prediction only the
last tokens of the order are predicted (about 1/6 of them, chosen as spans of 1..5 contiguous tokens, as XLNet's
span-based prediction), and every non-predicted token comes before every predicted one, so the context tokens see
each other bidirectionally. Nothing is moved: the order lives in a rank per position and in two attention masks.

- content stream, position i sees j  iff  rank[j] <= rank[i]  (itself included: it encodes its own token);
- query stream, predicted i sees the content of j  iff  rank[j] < rank[i]  (never its own token: it only knows
  its position, from a learned start vector plus the position embedding).

Non-predicted tokens have rank -1, predicted ones 0..n-1 in factorisation order. The corruption builds the masks
(pure tensor ops, seeded); ``Encoder.two_stream`` runs them with the encoder's own blocks.

Sequence-length constraints (checked in ``PLMCorruption``): spans are laid one per chunk of
``c = round(3 / predict_ratio)`` positions (3 = the mean span length) and never touch, so the ratio is at most
0.5 and a block must hold at least one chunk (``seq_len - 1 >= c``; 18 for the default 1/6). The ratio is exactly
3/c in expectation when ``seq_len - 1`` is a multiple of c and a little lower in a trailing partial chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..heads import LMHead
from .base import TaskModule, check_rate, require_family
from .mlm import IGNORE, N_SPECIAL

MAX_SPAN = 5
MEAN_SPAN = (MAX_SPAN + 1) / 2  # span lengths are uniform in 1..MAX_SPAN
PREDICT_RATIO = 1 / 6


def with_cls(blocks: torch.Tensor, cls_id: int) -> torch.Tensor:
    """Put BERT's [CLS] in front of every block: fine-tuning pools it, and here it is a context token every query
    can see (an all-False attention row would make SDPA return NaN)."""
    return torch.cat([torch.full((blocks.shape[0], 1), cls_id, dtype=blocks.dtype), blocks], 1)


def chunk_len(ratio: float) -> int:
    return max(MAX_SPAN + 1, round(MEAN_SPAN / ratio))


def span_targets(ordinary: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(B, T) bool: spans of 1..MAX_SPAN positions covering about ``ratio`` of them, never touching each other.

    Each chunk of ``chunk_len(ratio)`` positions holds one span with a uniform length at a uniform offset that
    leaves the chunk's last position free. Special tokens (``~ordinary``) are dropped from the spans.
    """
    B, T = ordinary.shape
    c = chunk_len(ratio)
    n = -(-T // c)
    lengths = torch.randint(1, MAX_SPAN + 1, (B, n), generator=generator)
    offsets = (torch.rand((B, n), generator=generator) * (c - lengths)).long()  # 0 .. c - length - 1
    k = torch.arange(MAX_SPAN)
    pos = (torch.arange(n) * c + offsets)[..., None] + k  # (B, n, MAX_SPAN)
    inside = k < lengths[..., None]
    covered = torch.zeros(B, n * c + MAX_SPAN, dtype=torch.long)
    covered.scatter_add_(1, pos.flatten(1), inside.flatten(1).long())  # unused slots may overlap: add zeros
    return (covered[:, :T] > 0) & ordinary


def factorisation_order(targets: torch.Tensor, generator: torch.Generator):
    """A random order of the predicted positions, after all the others.

    Returns:
        rank (B, T): -1 for context tokens, 0..n-1 for predicted tokens in factorisation order;
        positions (B, P): the predicted positions in factorisation order, P = the most any row predicts
        (padding slots hold position 0);
        valid (B, P): which slots are real.
    """
    B, T = targets.shape
    scores = torch.rand((B, T), generator=generator).masked_fill(~targets, 2.0)
    order = scores.argsort(1)  # predicted positions first, in a uniformly random order
    slot = torch.empty_like(order).scatter_(1, order, torch.arange(T).expand(B, T))
    rank = torch.where(targets, slot, -1)
    n = targets.sum(1)
    P = max(int(n.max()), 1)
    valid = torch.arange(P) < n[:, None]
    return rank, order[:, :P].masked_fill(~valid, 0), valid


def two_stream_masks(rank: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
    """Content mask (B, 1, T, T) and query mask (B, 1, P, T) from the ranks (True = may attend).

    Padding query slots attend to position 0 alone; their outputs are never used.
    """
    content = rank[:, None, :] <= rank[:, :, None]  # [b, i, j]: j is not later than i in the order
    query_rank = rank.gather(1, positions)
    query = rank[:, None, :] < query_rank[:, :, None]  # [b, p, j]: j is strictly earlier than slot p
    first_only = torch.zeros_like(query)
    first_only[..., 0] = True
    query = torch.where(valid[..., None], query, first_only)
    return content[:, None], query[:, None]


@dataclass
class PLMCorruption:
    """blocks (B, T-1) -> batch for ``PermutationLM``: the clean tokens (with [CLS]), the two masks, the predicted
    positions in factorisation order and their labels (IGNORE in padding slots)."""

    cls_id: int
    predict_ratio: float = PREDICT_RATIO

    def __post_init__(self):
        check_rate("--mask-prob (the permutation LM's predicted fraction)", self.predict_ratio, 0.5)

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        self._check_len(blocks.shape[1])
        ids = with_cls(blocks, self.cls_id)
        targets = span_targets(ids >= N_SPECIAL, self.predict_ratio, generator)
        rank, positions, valid = factorisation_order(targets, generator)
        content_mask, query_mask = two_stream_masks(rank, positions, valid)
        labels = ids.gather(1, positions).masked_fill(~valid, IGNORE)
        return {"input_ids": ids, "content_mask": content_mask, "query_mask": query_mask,
                "target_positions": positions, "labels": labels, "perm_rank": rank}

    def _check_len(self, block_len: int) -> None:
        c = chunk_len(self.predict_ratio)
        if block_len < c:
            raise UserError(f"the permutation LM lays one predicted span in every {c} tokens (predicted fraction "
                            f"{self.predict_ratio:.3f}); --seq-len must be at least {c + 1} ([CLS] + {c}), got "
                            f"{block_len + 1}.")

    def block_len(self, seq_len: int) -> int:
        self._check_len(seq_len - 1)
        return seq_len - 1


class QueryStart(nn.Module):
    """The query stream's input: one learned vector (XLNet's w), the same for every predicted position."""

    def __init__(self, d_model: int, std: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_model) * std)


class PermutationLM(TaskModule):
    kind = "plm"

    def __init__(self, backbone):
        require_family(backbone, self.kind, ("encoder",))
        super().__init__(backbone)
        cfg = backbone.config
        self.heads["lm"] = LMHead(cfg, backbone.wte)
        self.heads["query"] = QueryStart(cfg.d_model, cfg.init_std)

    def forward(self, batch: dict) -> dict:
        labels = batch["labels"]
        B, P = labels.shape
        query = self.heads["query"].weight.expand(B, P, -1)
        g = self.backbone.two_stream(batch["input_ids"], batch["content_mask"], query, batch["target_positions"],
                                     batch["query_mask"])
        return predict_slots(self.heads["lm"], g, labels)


def predict_slots(lm: LMHead, g: torch.Tensor, labels: torch.Tensor) -> dict:
    """LM loss of the query stream (B, P, C) on the real slots only (labels (B, P), IGNORE = padding)."""
    valid = labels != IGNORE
    targets = labels[valid]
    return {"loss": lm.loss(g[valid], targets), "labels": targets, "n_predictions": targets.numel()}
