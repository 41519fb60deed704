"""ELMo-style bidirectional LSTM (Peters et al. 2018): a forward and a backward LSTM stack over shared token
embeddings, trained as two language models (``objectives/elmo.py``). The hidden state of a token is the two
directions' top layers side by side, each ``d_model / 2`` wide, so heads see the same width as with any other
backbone.

ELMo's task-specific scalar mix over layers is left out: it has no pretraining signal (its weights would receive
no gradient here), and a fine-tuning head on the top layer is the common simplification.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import TextBackbone
from .config import ModelConfig
from .layers import Dropout, init_weights


def reverse_within_length(attention: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor:
    """(B, T) gather index that reverses each row's real tokens and leaves right padding in place; it is its own
    inverse, so the same index maps the backward LSTM's outputs back."""
    t = torch.arange(T, device=device).expand(B, T)
    if attention is None:
        return t.flip(1)
    lengths = attention.long().sum(1, keepdim=True)
    return torch.where(t < lengths, lengths - 1 - t, t)


class BiLSTM(TextBackbone):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        half = cfg.d_model // 2
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        between = cfg.dropout if cfg.n_layer > 1 else 0.0
        self.fwd = nn.LSTM(cfg.d_model, half, num_layers=cfg.n_layer, batch_first=True, dropout=between)
        self.bwd = nn.LSTM(cfg.d_model, half, num_layers=cfg.n_layer, batch_first=True, dropout=between)
        init_weights(self.wte, cfg.init_std)  # the LSTMs keep PyTorch's uniform init

    def directions(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None):
        """input_ids (B, T) -> (forward states, backward states), each (B, T, C/2). The forward state at t has read
        tokens <= t, the backward state tokens >= t (within the real length of a right-padded row)."""
        B, T = input_ids.shape
        x = self.drop(self.wte(input_ids))  # (B, T, C)
        f, _ = self.fwd(x)
        rev = reverse_within_length(attention, B, T, input_ids.device)[..., None]
        b, _ = self.bwd(x.gather(1, rev.expand_as(x)))
        b = b.gather(1, rev.expand_as(b))
        return self.drop(f), self.drop(b)

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> (B, T, C): both directions side by side. Positions are implicit in the recurrence;
        token types and attention masks do not apply."""
        return torch.cat(self.directions(input_ids, attention), -1)
