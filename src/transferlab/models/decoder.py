"""GPT-2-style causal decoder: token + position embeddings, pre-norm blocks, final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import Block, init_weights


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        init_weights(self, cfg.init_std)

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden (B, T, C).

        Sequences are right-padded, so the causal pattern alone keeps real tokens from seeing padding;
        ``attention`` is accepted for interface symmetry and ``token_type_ids`` ignored (GPT has none).
        """
        T = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        for block in self.h:
            x = block(x, mask=mask, is_causal=mask is None)
        return self.ln_f(x)
