"""GPT-2-style causal decoder: token + position embeddings, pre-norm blocks, final LayerNorm (or, with rotary
positions, no position table and RoPE in every block's attention)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import TextBackbone
from .config import ModelConfig
from .layers import Block, Dropout, KVCache, block_at, init_weights, rotary


class Decoder(TextBackbone):
    selects_positions = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        init_weights(self, cfg.init_std)
        # GPT-2's scaled initialisation: every block adds two branches to the residual stream, so their output
        # projections start at std / sqrt(2 * n_layer) and the stream's variance does not grow with depth.
        for block in self.h:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.h)

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: list[KVCache] | None = None,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden (B, T, C).

        Sequences are right-padded, so the causal pattern alone keeps real tokens from seeing padding;
        ``attention`` is accepted for interface symmetry and ``token_type_ids`` ignored (GPT has none).
        ``cache`` (one ``KVCache`` per layer, from ``new_cache``) makes the call incremental: the new tokens
        attend to every cached position. Without ``mask`` they are taken to follow the cached ones unpadded;
        with padding, pass per-row ``positions`` and a (B, 1, T, past + T) ``mask``. ``select`` (B,) index: only
        that position of each row is wanted (a classifier's last token), so the last block computes it alone
        (``layers.block_at``) -> hidden (B, 1, C); not with ``mask`` or ``cache``.
        """
        if select is not None and (mask is not None or cache is not None):
            raise ValueError("select= works on the causal pattern alone: pass neither `mask` nor `cache` with it")
        T = input_ids.shape[1]
        past = 0 if cache is None else cache[0].length
        if positions is None:
            positions = torch.arange(past, past + T, device=input_ids.device)
        if cache is not None and mask is None:  # SDPA's is_causal aligns top-left, wrong for queries after a past
            keys = torch.arange(past + T, device=input_ids.device)
            mask = keys[None, :] <= keys[past:, None]  # (T, past + T)
        x = self.wte(input_ids)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        r = rotary(self.config, positions)
        for i, block in enumerate(self.h if select is None else self.h[:-1]):
            x = block(x, mask=mask, is_causal=mask is None, cache=None if cache is None else cache[i], rope=r)
        if select is not None:
            x = block_at(self.h[-1], x, select, causal=True, rope=r)
        return self.ln_f(x)

    def new_cache(self, capacity: int | None = None) -> list[KVCache]:
        """An empty key/value cache for ``capacity`` positions (default: the position table's size)."""
        return [KVCache(capacity or self.config.max_len) for _ in self.h]
