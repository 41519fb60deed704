"""BERT-style bidirectional encoder: token (+ learned position) + token-type embeddings, LayerNorm, then blocks
(pre-norm with a final LayerNorm by default, or BERT's original post-norm). With rotary positions there is no
position table: every block's attention rotates queries and keys by their positions."""

from __future__ import annotations

import torch
from torch import nn

from .base import TextBackbone
from .config import ModelConfig
from .layers import Block, Dropout, block_at, init_weights, padding_mask, rotary


class Encoder(TextBackbone):
    selects_positions = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        self.wtt = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_first else nn.Identity()
        init_weights(self, cfg.init_std)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.h)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.wte(input_ids)
        if self.wpe is not None:
            x = x + self.wpe(self._positions(input_ids, positions))
        x = x + (self.wtt(token_type_ids) if token_type_ids is not None else self.wtt.weight[0])
        return self.drop(self.ln_emb(x))

    @staticmethod
    def _positions(input_ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(input_ids.shape[1], device=input_ids.device) if positions is None else positions

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, select: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden (B, T, C). ``attention`` is the (B, T) padding mask; ``mask`` an arbitrary
        (B|1, 1|nh, T, T) bool attention pattern that replaces it. ``select`` (B,) index: only that position of
        each row is wanted, so the last block computes it alone (``layers.block_at``) -> hidden (B, 1, C)."""
        if select is not None and mask is not None:
            raise ValueError("select= needs the padding mask `attention`, not an arbitrary `mask`")
        if mask is None:
            mask = padding_mask(attention)
        x = self.embed(input_ids, positions, token_type_ids)
        r = rotary(self.config, self._positions(input_ids, positions))
        for block in self.h if select is None else self.h[:-1]:
            x = block(x, mask=mask, rope=r)
        if select is not None:
            x = block_at(self.h[-1], x, select, mask, rope=r)
        return self.ln_f(x)

    def two_stream(self, input_ids: torch.Tensor, content_mask: torch.Tensor, query: torch.Tensor,
                   query_positions: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """Two-stream attention (XLNet, MPNet) with the encoder's own blocks and weights.

        The content stream is the ordinary encoder pass under ``content_mask``. The query stream starts from
        ``query`` (B, P, C) plus the position embedding of ``query_positions`` (B, P) and, in every block, attends
        with the same weights to the previous layer's content stream (``kv=``) under ``query_mask``. A
        ``query_mask`` over T + P keys lets queries also see the query stream itself (MPNet's position
        compensation: the [MASK]s of the predicted positions).

        Args:
            input_ids: (B, T) tokens of the content stream.
            content_mask: (B, 1, T, T) bool, True = may attend.
            query: (B, P, C) query-stream input before positions (XLNet: a learned vector; MPNet: embedded masks).
            query_positions: (B, P) position ids of the predicted tokens.
            query_mask: (B, 1, P, T) or (B, 1, P, T + P) bool.
        Returns:
            query hidden (B, P, C): what the predictions read (the last block's content pass is skipped, nothing
            reads it).
        """
        T, P = input_ids.shape[1], query.shape[1]
        if query_mask.shape[-1] not in (T, T + P):
            raise ValueError(f"query_mask covers {query_mask.shape[-1]} keys; expected T={T} or T+P={T + P}")
        h = self.embed(input_ids)
        if self.wpe is not None:
            query = query + self.wpe(query_positions)
        g = self.drop(self.ln_emb(query + self.wtt.weight[0]))
        sees_queries = query_mask.shape[-1] == T + P
        # rotary: queries turn by the positions they predict, keys by the content (and query) positions
        content = rotary(self.config, self._positions(input_ids, None))
        asked = rotary(self.config, query_positions)
        query_rope = None if asked is None else (asked, content.cat(asked) if sees_queries else content)
        for i, block in enumerate(self.h):
            kv = torch.cat([h, g], 1) if sees_queries else h  # (B, T [+ P], C): both from the previous layer
            g = block(g, kv=kv, mask=query_mask, rope=query_rope)
            if i < len(self.h) - 1:
                h = block(h, mask=content_mask, rope=content)
        return self.ln_f(g)
