"""BART-style encoder-decoder: one token embedding shared by the encoder, the decoder and the LM head; learned
positions for each side (or rotary ones in each side's self-attention); a bidirectional encoder of ``Block``s and
a causal decoder of ``CrossBlock``s that attend to the encoder's output.

``forward(input_ids, attention, decoder_input_ids=...)`` returns the decoder's hidden states. Without
``decoder_input_ids`` the input is fed to both sides, as BART does for sequence classification, so a
classification head reading the last real token works on this backbone like on a GPT decoder. With the config's
``decoder_start_id`` set (a converted Hugging Face BART) the decoder's copy is shifted right behind that token, as
Hugging Face does; without it (our own pretraining) the decoder reads the input unshifted.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import TextBackbone
from .config import ModelConfig
from .layers import Block, CrossBlock, Dropout, init_weights, padding_mask, rotary


class EncoderDecoder(TextBackbone):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        learned = cfg.position == "learned"
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if learned else None  # encoder positions
        self.wpe_dec = nn.Embedding(cfg.max_len, cfg.d_model) if learned else None
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ln_emb_dec = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.h_dec = nn.ModuleList(CrossBlock(cfg) for _ in range(cfg.n_dec_layer))
        final = (lambda: nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)) if cfg.norm_first else nn.Identity
        self.ln_f, self.ln_f_dec = final(), final()
        init_weights(self, cfg.init_std)

    @property
    def blocks(self) -> list[nn.Module]:
        """The encoder's blocks, then the decoder's: the decoder reads the encoder's output, so it sits above."""
        return [*self.h, *self.h_dec]

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor | None, wpe: nn.Embedding | None,
               ln: nn.LayerNorm):
        """-> (embedded input (B, T, C), rotary angles of its positions or None)."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) if wpe is None else self.wte(ids) + wpe(positions)
        return self.drop(ln(x)), rotary(self.config, positions)

    def encode(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, S) -> memory (B, S, C). ``attention`` is the (B, S) padding mask."""
        mask = padding_mask(attention)
        x, r = self._embed(input_ids, positions, self.wpe, self.ln_emb)
        for block in self.h:
            x = block(x, mask=mask, rope=r)
        return self.ln_f(x)

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, attention: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """decoder_input_ids (B, T), memory (B, S, C) -> hidden (B, T, C). ``attention`` is the encoder's (B, S)
        padding mask; the decoder's own right padding needs none (causal). ``positions`` (T,) or (B, T) lets MASS
        decode a span at its place in the sentence."""
        memory_mask = padding_mask(attention)
        x, r = self._embed(decoder_input_ids, positions, self.wpe_dec, self.ln_emb_dec)
        for block in self.h_dec:
            x = block(x, memory, memory_mask, rope=r)
        return self.ln_f_dec(x)

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None,
                decoder_positions: torch.Tensor | None = None) -> torch.Tensor:
        """-> decoder hidden (B, T, C). ``token_type_ids`` is ignored (BART has none); ``mask`` is not supported
        (the encoder's pattern is its padding, the decoder's is causal)."""
        if mask is not None:
            raise ValueError("EncoderDecoder takes no arbitrary attention mask; pass the padding mask `attention`.")
        memory = self.encode(input_ids, attention, positions)
        if decoder_input_ids is None:
            decoder_input_ids, decoder_positions = input_ids, positions
            start = self.config.decoder_start_id
            if start is not None:
                decoder_input_ids = torch.cat([torch.full_like(input_ids[:, :1], start), input_ids[:, :-1]], 1)
        return self.decode(decoder_input_ids, memory, attention, decoder_positions)
