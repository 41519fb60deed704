"""Projection and prediction heads of self-supervised image objectives (SimCLR's projector, BYOL's projector and
predictor): pooled backbone features -> a small MLP -> the space the loss compares views in.

They are pretraining heads: the representation that transfers is the backbone's pooled features *before* the
projector (Chen et al. 2020, section 4.2: a linear probe on h beats one on z = g(h) by more than 10 points), so
transfer drops them with every other head.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear, the projector of SimCLR (v2) and BYOL and BYOL's predictor.

    The first linear layer has no bias (BatchNorm follows). BatchNorm needs more than one image per batch in
    training mode, which the objectives' minimum batch sizes guarantee.
    """

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) -> (N, d_out)."""
        return self.fc2(torch.relu(self.bn(self.fc1(x))))
