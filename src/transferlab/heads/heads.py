"""The language-model head (tied to the input embedding) and the sequence classification/regression head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.config import ModelConfig
from ..models.layers import Dropout, init_weights
from .fused_ce import linear_cross_entropy


class LMHead(nn.Module):
    """Hidden states -> vocabulary logits, with the output matrix tied to the token embedding.

    With ``lm_head="bert"`` it has BERT's transform (dense, GELU, LayerNorm) and an output bias; by default it is
    the tied projection alone (see ModelConfig.lm_head for the measurement behind that default). The tied
    embedding is held outside the module tree so the weight is saved once, under ``backbone.wte.weight``.
    """

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self._embedding = [embedding]  # a list hides it from state_dict / parameters()
        self.transform = cfg.lm_head == "bert"
        self.bias = None
        if self.transform:
            self.dense = nn.Linear(cfg.d_model, cfg.d_model)
            self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
            self.approximate = "tanh" if cfg.activation == "gelu_tanh" else "none"
            self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        init_weights(self, cfg.init_std)

    def _transform(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.transform:
            hidden = self.ln(F.gelu(self.dense(hidden), approximate=self.approximate))
        return hidden

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V) logits."""
        return F.linear(self._transform(hidden), self._embedding[0].weight, self.bias)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of (N, C) hidden states against (N,) targets (-100 = ignore), computed in chunks
        without materialising the (N, V) logits."""
        return linear_cross_entropy(self._transform(hidden), self._embedding[0].weight, self.bias, targets)


POOLINGS = ("cls", "mean", "last")  # what pool() reads: see its docstring


def pool(hidden: torch.Tensor, attention: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, C) -> (B, C): first token ("cls"), last real token ("last", for causal models), or "mean"."""
    if how == "cls":
        return hidden[:, 0]
    if attention is None:
        attention = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if how == "last":
        last = attention.long().sum(1).clamp(min=1) - 1  # right padding
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "mean":
        w = attention.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
    raise ValueError(f"unknown pooling {how!r}")


class ClassificationHead(nn.Module):
    """Pool, then (text) BERT's pooler (dense + tanh), dropout and a linear layer to ``num_labels`` outputs
    (1 output = regression).

    Image heads have no pooler: pooled features go straight to the linear layer, as in ResNet's ``fc`` and ViT's
    head, so a linear probe on an image backbone is a linear model of its features (MedMNIST+'s protocol).
    """

    def __init__(self, cfg: ModelConfig, num_labels: int, pooling: str | None = None):
        super().__init__()
        if pooling is not None and pooling not in POOLINGS:
            raise UserError(f"unknown pooling '{pooling}'; choose {', '.join(POOLINGS)}.")
        self.num_labels = num_labels
        self.pooling = pooling or cfg.default_pooling
        self.dense = nn.Linear(cfg.d_model, cfg.d_model) if cfg.modality == "text" else None
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, num_labels)
        init_weights(self, cfg.init_std)

    def forward(self, hidden: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        x = pool(hidden, attention, self.pooling)
        if self.dense is not None:
            x = torch.tanh(self.dense(x))
        return self.out(self.drop(x))
