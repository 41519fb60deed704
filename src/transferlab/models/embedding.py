"""Context-free word vectors (word2vec's generation): a token's hidden state is its vector, whatever surrounds it.

As a backbone it makes the classic baseline: a classifier over the mean of the word vectors. Its ``wte`` is what
word2vec pretraining learns and what transfer carries to the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import TextBackbone
from .config import ModelConfig
from .layers import Dropout, init_weights


class WordVectors(TextBackbone):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        init_weights(self, cfg.init_std)

    def forward(self, input_ids: torch.Tensor, attention: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> (B, T, C). The other arguments exist for interface symmetry and are ignored: a
        word vector does not depend on position, segment or neighbours (padding is left to the pooling)."""
        return self.drop(self.wte(input_ids))
