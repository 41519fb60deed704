"""Self-supervised objectives for speech: the speech versions of BERT and GPT, on log-mel frames.

- ``masked-frames`` (speech "BERT"): spans of positions are hidden and the model reconstructs the log-mel frames
  under them from the context on both sides. Spans as in wav2vec 2.0 / HuBERT (several consecutive positions, so
  a masked frame cannot be copied from its neighbours); the target is the masked frames themselves, regressed with an
  L1 loss as Mockingjay and TERA do (Liu et al. 2020, 2021), not HuBERT's k-means cluster ids. Why: on a CPU budget
  of an hour, regression needs no clustering pass over the corpus and no second iteration (HuBERT's first-iteration
  MFCC clusters are a coarse target it only gets past by re-clustering its own features, which doubles the
  pretraining), its target is dense (4 x n_mels numbers per masked position instead of one id), and it works on
  any audio without a choice of cluster count. The price is a target that rewards predicting spectral detail; that
  is what the comparison against scratch and MFCCs measures.
- ``apc`` (speech "GPT"): autoregressive predictive coding (Chung et al. 2019): a causal model predicts the frames
  ``shift`` positions ahead from the past, L1 loss. With the 4x subsampler a position ends at frame 4p + 3 and
  ``shift=1`` predicts frames 4p + 4 .. 4p + 7, 10 to 40 ms ahead (APC's best n was 3 frames of 10 ms). The causal
  attention is the same trunk with a causal mask (``AudioConfig.causal``), kept when the model is fine-tuned.

Each is a corruption (pure data, seeded, run by the batch source) and a task module; sparse prediction as in masked
LM: the head runs on the masked positions only. Frames are compared in the normalised log-mel units the model reads;
padding frames are never targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.audio import SUBSAMPLING, AudioTransformer, subsampled_lengths
from ..models.layers import init_weights
from .base import TaskModule, check_rate

MASK_PROB = 0.4  # share of the real positions hidden (wav2vec 2.0's p=0.065, M=10 hides about half)
SPAN = 4  # positions per span: 160 ms, about a syllable (wav2vec 2.0: 10 x 20 ms = 200 ms)
SHIFT = 1  # APC: positions ahead (40 ms each)


def span_mask(lengths: torch.Tensor, n_positions: int, prob: float, span: int, g: torch.Generator) -> torch.Tensor:
    """Non-overlapping spans of ``span`` positions over the first ``lengths[b]`` positions of each row.

    Row b gets exactly k = min(round(prob * n / span), n // span) spans (n = lengths[b]), uniformly over the ways to
    place k non-overlapping spans: choose k of the n - k (span - 1) slots at random, sort them, and move the i-th
    right by i (span - 1). Spans may touch, never overlap, and never reach padding. Pure tensor ops.

    Returns:
        (B, n_positions) bool, True = masked.
    """
    B = len(lengths)
    k = torch.minimum(torch.round(lengths.double() * prob / span).long(), lengths // span)  # (B,)
    K = int(k.max()) if B else 0
    if K == 0:
        return torch.zeros(B, n_positions, dtype=torch.bool)
    slots = lengths - k * (span - 1)  # (B,) >= k
    scores = torch.rand(B, int(slots.max()), generator=g)
    scores = scores.masked_fill(torch.arange(scores.shape[1])[None] >= slots[:, None], 2.0)  # invalid slots last
    chosen = scores.argsort(dim=1)[:, :K]  # (B, K): a random order of each row's valid slots, first K
    valid = torch.arange(K)[None] < k[:, None]
    chosen = chosen.masked_fill(~valid, n_positions).sort(dim=1).values  # row b's k slots first, ascending
    starts = chosen + torch.arange(K)[None] * (span - 1)  # (B, K)
    pos = (starts[..., None] + torch.arange(span)).flatten(1)  # (B, K * span)
    pos = pos.masked_fill(~valid.repeat_interleave(span, dim=1), n_positions)  # unused spans -> a spare column
    mask = torch.zeros(B, n_positions + 1, dtype=torch.bool)
    mask.scatter_(1, pos.clamp(max=n_positions), True)
    return mask[:, :n_positions]


@dataclass
class SpanMasking:
    """The masked-frames corruption: hide ``mask_prob`` of each clip's real positions in spans of ``span``
    positions (each position = ``SUBSAMPLING`` input frames), by setting their frames to 0 (the corpus mean after
    normalisation). The batch gains ``targets`` (the clean frames) and ``mask`` (B, positions)."""

    mask_prob: float = MASK_PROB
    span: int = SPAN

    def __post_init__(self):
        check_rate("--mask-prob", self.mask_prob, high=0.9)
        if not (isinstance(self.span, int) and self.span >= 1):
            raise UserError(f"--noise span={self.span} must be a whole number of positions (40 ms each), at least 1.")

    def __call__(self, batch: dict, g: torch.Generator) -> dict:
        frames, attention = batch["frames"], batch["attention"]
        B, T, M = frames.shape
        if T % SUBSAMPLING:
            raise ValueError(f"frames must come padded to a multiple of {SUBSAMPLING}, got {T}")
        P = T // SUBSAMPLING
        mask = span_mask(subsampled_lengths(attention.sum(1)), P, self.mask_prob, self.span, g)  # (B, P)
        hidden = mask.repeat_interleave(SUBSAMPLING, dim=1)  # (B, T)
        return {"frames": frames.masked_fill(hidden[..., None], 0.0), "attention": attention, "targets": frames,
                "mask": mask}


@dataclass
class Unchanged:
    """APC's corruption: none (the causal mask hides the future inside the model)."""

    def __call__(self, batch: dict, g: torch.Generator) -> dict:
        return batch


def _frames_head(backbone) -> nn.Linear:
    cfg = backbone.config
    head = nn.Linear(cfg.d_model, SUBSAMPLING * cfg.n_mels)  # one position -> its 4 frames
    init_weights(head, cfg.init_std)
    return head


def _require_audio(backbone, objective: str, causal: bool) -> None:
    if not isinstance(backbone, AudioTransformer):
        raise UserError(f"objective '{objective}' trains an audio transformer (models.audio_preset); got a "
                        f"'{backbone.config.family}' backbone.")
    if backbone.config.causal != causal:
        need = "causal (attention to the past only: audio_preset(..., causal=True))" if causal else \
            "bidirectional (causal=False)"
        raise UserError(f"objective '{objective}' needs a {need} backbone; the CLI's `pretrain --objective "
                        f"{objective}` builds it so.")


def frame_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute error over real frames: pred/target (N, S, M) for N positions of S frames each, weight (N, S)
    1 = a real frame. Returns (loss, number of real frames)."""
    w = weight.to(pred.dtype)[..., None]  # (N, S, 1)
    n = w.sum()
    loss = ((pred - target).abs() * w).sum() / (n * pred.shape[-1]).clamp(min=1)
    return loss, n


class MaskedFrames(TaskModule):
    """Speech BERT: reconstruct the frames of masked spans (batches from ``SpanMasking``)."""

    kind = "masked-frames"
    perplexity_of = None

    def __init__(self, backbone):
        super().__init__(backbone)
        _require_audio(backbone, self.kind, causal=False)
        self.heads["frames"] = _frames_head(backbone)

    def forward(self, batch: dict) -> dict:
        frames, attention, mask = batch["frames"], batch["attention"], batch["mask"]
        B, T, M = frames.shape
        x = self.backbone.embed(frames)  # (B, P, d)
        hidden = self.backbone.encode(x, self.backbone.positions_attention(attention, x.shape[1]))
        pred = self.heads["frames"](hidden[mask]).float().view(-1, SUBSAMPLING, M)  # (N, 4, M)
        target = batch["targets"].reshape(B, -1, SUBSAMPLING, M)[mask]  # (N, 4, M)
        real = attention.reshape(B, -1, SUBSAMPLING)[mask]  # (N, 4): the last position may end in padding
        loss, n = frame_l1(pred, target.float(), real)
        return {"loss": loss, "n_predictions": n.detach()}


class APC(TaskModule):
    """Speech GPT: predict the frames ``shift`` positions ahead with a causal backbone."""

    kind = "apc"
    perplexity_of = None

    def __init__(self, backbone, shift: int = SHIFT):
        super().__init__(backbone)
        _require_audio(backbone, self.kind, causal=True)
        if not (isinstance(shift, int) and shift >= 1):
            raise UserError(f"--noise shift={shift} must be a whole number of positions (40 ms each), at least 1.")
        self.shift = shift
        self.heads["frames"] = _frames_head(backbone)

    def task_config(self) -> dict:
        return {"kind": self.kind, "shift": self.shift}

    def forward(self, batch: dict) -> dict:
        frames, attention = batch["frames"], batch["attention"]
        B, T, M = frames.shape
        k = self.shift
        hidden = self.backbone(frames, attention)  # (B, P, d), position p has seen frames < 4p + 4
        pred = self.heads["frames"](hidden[:, :-k]).float().view(B, -1, SUBSAMPLING, M)  # (B, P - k, 4, M)
        target = frames.reshape(B, -1, SUBSAMPLING, M)[:, k:]  # (B, P - k, 4, M)
        real = attention.reshape(B, -1, SUBSAMPLING)[:, k:]  # (B, P - k, 4)
        loss, n = frame_l1(pred.flatten(0, 1), target.float().flatten(0, 1), real.flatten(0, 1))
        return {"loss": loss, "n_predictions": n.detach()}
