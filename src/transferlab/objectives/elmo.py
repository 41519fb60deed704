"""ELMo's bidirectional language model: the forward LSTM predicts token t+1 from tokens <= t, the backward LSTM
token t-1 from tokens >= t; the loss is the mean of the two. As in ELMo the softmax is shared by the directions
(and tied to the token embedding here): a linear map lifts each direction's C/2 state to the embedding width.
No corruption: the packed block is the input and both targets (``CLMCorruption``).
"""

from __future__ import annotations

from torch import nn

from ..heads import LMHead
from .base import TaskModule, require_family
from .clm import IGNORE


class BidirectionalLM(TaskModule):
    kind = "elmo"

    def __init__(self, backbone):
        require_family(backbone, self.kind, ("rnn",))
        super().__init__(backbone)
        cfg = backbone.config
        self.heads["lift"] = nn.Linear(cfg.d_model // 2, cfg.d_model)
        self.heads["lm"] = LMHead(cfg, backbone.wte)

    def forward(self, batch: dict) -> dict:
        ids = batch["input_ids"]
        attention = batch.get("attention")
        fwd, bwd = self.backbone.directions(ids, attention)
        next_tokens, prev_tokens = ids[:, 1:], ids[:, :-1]
        if attention is not None:
            next_tokens = next_tokens.masked_fill(attention[:, 1:] == 0, IGNORE)
            prev_tokens = prev_tokens.masked_fill(attention[:, 1:] == 0, IGNORE)  # the state at t+1 is padding
        lift, lm = self.heads["lift"], self.heads["lm"]
        loss_fwd = lm.loss(lift(fwd[:, :-1]).flatten(0, 1), next_tokens.flatten())
        loss_bwd = lm.loss(lift(bwd[:, 1:]).flatten(0, 1), prev_tokens.flatten())
        return {"loss": (loss_fwd + loss_bwd) / 2, "forward_loss": loss_fwd.detach(),
                "backward_loss": loss_bwd.detach(), "n_predictions": int((next_tokens != IGNORE).sum())}
