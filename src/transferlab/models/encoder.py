"""BERT-style bidirectional encoder: token + position + token-type embeddings, LayerNorm, then blocks
(pre-norm with a final LayerNorm by default, or BERT's original post-norm)."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import Block, init_weights, padding_mask


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model)
        self.wtt = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.norm_first else nn.Identity()
        init_weights(self, cfg.init_std)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(T, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        x = x + (self.wtt(token_type_ids) if token_type_ids is not None else self.wtt.weight[0])
        return self.drop(self.ln_emb(x))

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden (B, T, C). ``attention`` is the (B, T) padding mask; ``mask`` an arbitrary
        (B|1, 1|nh, T, T) bool attention pattern that replaces it."""
        if mask is None:
            mask = padding_mask(attention)
        x = self.embed(input_ids, positions, token_type_ids)
        for block in self.h:
            x = block(x, mask=mask)
        return self.ln_f(x)
