"""A transformer over log-mel frames: a convolutional frame subsampler (the stem) feeding the text encoder's blocks.

The stem is two 1-D convolutions over time (kernel 3, stride 2, GELU after each) with the mel bins as input
channels, as speech transformers subsample their input (Whisper's encoder, ESPnet's and the Conformer's
``Conv2dSubsampling``, wav2vec 2.0's feature encoder on waveforms): 10 ms frames become 40 ms positions, so the
attention runs over a quarter of the frames. The trunk is ``layers.Block`` unchanged (pre-norm, rotary positions,
a final LayerNorm), so everything that works on the text encoder's blocks (layer groups, gradual unfreezing, LoRA)
works here.

``causal=True`` makes every block attend to the past only, as a GPT does: what autoregressive predictive coding
(APC, Chung et al. 2019) pretrains, and what a model pretrained that way keeps when it is fine-tuned. A position p
reads input frames up to 4p + 3 through the stem (receptive field of the two convolutions), so with causal attention
the hidden state at p has seen nothing after frame 4p + 3.

The pieces the objectives need are public: ``embed`` (stem), ``encode`` (blocks + final norm, with a padding mask,
causal or not) and ``positions_attention`` (which subsampled positions hold real audio).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import Backbone, JsonConfig
from .layers import Block, Dropout, init_weights, padding_mask, rotary

SUBSAMPLING = 4  # input frames per position: two stride-2 convolutions


@dataclass
class AudioConfig(JsonConfig):
    """An audio transformer over ``n_mels``-bin log-mel frames. Besides its own fields it has what ``layers.Block``
    and ``layers.rotary`` read (``norm_first``, ``position``, ``d_ff``, ``activation``, ``norm_eps``), so the blocks
    are the text encoder's."""

    family: str = "audio_transformer"
    n_mels: int = 80
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 2
    d_ff: int = 0  # 0 -> 4 * d_model
    dropout: float = 0.0
    norm_eps: float = 1e-5
    activation: str = "gelu"
    init_std: float = 0.02
    causal: bool = False  # True: attention to the past only (APC pretraining, and what fine-tuning then keeps)

    modality = "audio"  # class attributes: not fields, not in config.json
    default_pooling = "mean"  # the mean of the real positions
    position = "rotary"  # relative positions: no table, so any clip length fits
    norm_first = True

    def __post_init__(self):
        if self.family != "audio_transformer":
            raise UserError(f"AudioConfig builds family 'audio_transformer', not '{self.family}'.")
        for name in ("n_mels", "n_layer", "d_model", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name}={value!r} must be a positive whole number.")
        if self.d_ff == 0:
            self.d_ff = 4 * self.d_model
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise UserError(f"d_model={self.d_model} must split into n_head={self.n_head} heads of an even size "
                            f"(rotary positions turn channel pairs).")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout={self.dropout} must be in [0, 1).")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise UserError(f"unknown activation '{self.activation}'; choose gelu or gelu_tanh.")
        if not isinstance(self.causal, bool):
            raise UserError(f"causal={self.causal!r} must be true or false.")


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Real positions after the stem for clips of ``lengths`` real frames: ceil(ceil(n / 2) / 2) = ceil(n / 4)."""
    return torch.div(lengths + SUBSAMPLING - 1, SUBSAMPLING, rounding_mode="floor")


class AudioTransformer(Backbone):
    modality = "audio"
    unit = "frames"

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.config = cfg
        # stem, registered before the blocks (layer_groups' stem group)
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        init_weights(self, cfg.init_std)
        for conv in (self.conv1, self.conv2):  # PyTorch's default (Kaiming-uniform) init: these feed GELUs
            conv.reset_parameters()

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.h)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, n_mels), normalised log-mel -> (B, ceil(T / 4), d), one vector per 40 ms."""
        if frames.dim() != 3 or frames.shape[-1] != self.config.n_mels or not frames.is_floating_point():
            raise UserError(f"the audio backbone reads float log-mel frames (B, T, {self.config.n_mels}); got "
                            f"{str(frames.dtype).replace('torch.', '')} {tuple(frames.shape)}. Prepare audio "
                            f"through the model's inputs (AudioInputs).")
        x = F.gelu(self.conv1(frames.transpose(1, 2)))  # (B, d, T/2)
        x = F.gelu(self.conv2(x))  # (B, d, T/4)
        return x.transpose(1, 2)  # (B, T/4, d)

    def encode(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, P, d) stem output, attention (B, P) 1 = a real position -> hidden (B, P, d)."""
        mask = padding_mask(attention)
        causal = self.config.causal
        if causal and mask is not None:
            # right padding: a real query's past holds only real keys, and a padded one sees some, so no row of
            # the pattern is empty (SDPA would return NaN for it)
            P = x.shape[1]
            mask = mask & torch.ones(P, P, dtype=torch.bool, device=x.device).tril()  # (B, 1, P, P)
            causal = False
        r = rotary(self.config, torch.arange(x.shape[1], device=x.device))
        x = self.drop(x)
        for block in self.h:
            x = block(x, mask=mask, is_causal=causal, rope=r)
        return self.ln_f(x)

    @staticmethod
    def positions_attention(attention: torch.Tensor | None, n_positions: int) -> torch.Tensor | None:
        """The (B, T) frame mask of a right-padded batch as a (B, n_positions) mask over the stem's positions."""
        if attention is None:
            return None
        real = subsampled_lengths(attention.long().sum(1))  # (B,)
        return (torch.arange(n_positions, device=attention.device)[None] < real[:, None]).long()

    def forward(self, frames: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, n_mels), attention (B, T) 1 = a real frame -> hidden (B, ceil(T / 4), d)."""
        x = self.embed(frames)
        return self.encode(x, self.positions_attention(attention, x.shape[1]))

    def features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self(batch["frames"], batch.get("attention"))
        return hidden, self.positions_attention(batch.get("attention"), hidden.shape[1])

    def count(self, batch: dict) -> int:
        """Log-mel frames fed in, padding included (what the convolutions process), as text counts tokens."""
        return batch["frames"].shape[0] * batch["frames"].shape[1]

    def adapt_weights(self, weights: dict[str, torch.Tensor], source: dict, where: str
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """A checkpoint's weights load only into the same architecture; another one is refused with the fix."""
        mine = self.config.to_dict()
        differ = [f"{k} {source.get(k)} in the checkpoint, {v} here" for k, v in mine.items()
                  if k not in ("dropout", "init_std") and source.get(k) != v]
        if differ:
            raise UserError(f"the weights of {where} do not fit this audio backbone: {'; '.join(differ)}. Use "
                            f"--init scratch to train this architecture from random weights, or a checkpoint of the "
                            f"same architecture.")
        return weights, []


# Audio presets follow the Keyword Transformer family (KWT, Berg et al. 2021: 12 layers at widths 64 / 128 / 192,
# head size 64), scaled down in depth for a CPU. Parameters with 80 mel bins: tiny 0.13M, mini 0.87M, small 2.8M.
AUDIO_PRESETS: dict[str, dict] = {
    "audio-tiny": dict(n_layer=2, d_model=64, n_head=1),  # KWT-1's width: the test preset
    "audio-mini": dict(n_layer=4, d_model=128, n_head=2),  # KWT-2's width, a third of its depth
    "audio-small": dict(n_layer=6, d_model=192, n_head=3),  # KWT-3's width, half its depth
}


def audio_preset(name: str, n_mels: int = 80, **overrides) -> AudioConfig:
    """An audio backbone config from a preset name (``AUDIO_PRESETS``); ``overrides`` replace any field (e.g.
    ``causal=True``, ``dropout=0.1``)."""
    if name not in AUDIO_PRESETS:
        raise UserError(f"unknown audio model preset '{name}' (--model); choose one of {', '.join(AUDIO_PRESETS)}.")
    kw = dict(AUDIO_PRESETS[name], n_mels=n_mels)
    kw.update(overrides)
    unknown = sorted(set(kw) - set(AudioConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"the audio preset '{name}' has no option {', '.join(unknown)}; its options are "
                        f"{', '.join(sorted(AudioConfig.__dataclass_fields__))}.")
    return AudioConfig(**kw)
