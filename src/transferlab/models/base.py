"""What every backbone offers the code above it, whatever its input: the contract heads, transfer methods, probes
and the training loop rely on, so none of them needs to know whether it serves text, images or audio.

A backbone is a stem (token embedding, patch embedding, convolutional stem, frame subsampler) feeding a trunk
(transformer blocks, residual stages, LSTMs). From outside it is:

- ``features(batch) -> (hidden (B, T, C), attention (B, T) or None)``: the trunk's output over the positions a
  pooling head reads (tokens, patches, feature-map cells, frames), and which of them are real (None: all are);
- ``count(batch)``: how many units of input (``unit``: tokens, images, frames) the batch feeds it, for throughput;
- ``blocks``: the trunk's blocks, bottom first, so layer groups, discriminative learning rates, gradual unfreezing
  and adapters stay generic (timm's ``group_matcher`` idea);
- ``config``: a dataclass that round-trips through ``config.json``, with ``d_model`` (the feature width),
  ``dropout``, ``init_std`` and ``default_pooling``, which the heads read;
- ``adapt_weights``: how a checkpoint made for a slightly different input (channels, image size) is fitted.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import torch
from torch import nn

from ..errors import UserError


class JsonConfig:
    """What every backbone config dataclass shares: the round trip through config.json's ``backbone``."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        from ..options import coerce, type_hints

        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"{cls.__name__} has unknown fields {sorted(unknown)}; the config was written by a newer "
                            f"version or edited by hand. Remove them from config.json's backbone.")
        hints = type_hints(cls)
        for name, value in d.items():
            try:
                coerce(hints[name], value)
            except ValueError as e:
                raise UserError(f"config.json's backbone.{name} must be {e}, got {value!r} ({type(value).__name__}); "
                                f"the config was edited by hand or written by another tool. Fix that field, or write "
                                f"the checkpoint again.") from None
        return cls(**d)


class Backbone(nn.Module):
    modality: str = "text"
    unit: str = "tokens"

    def features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def features_for(self, batch: dict, pooling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``features(batch)`` as a head pooling by ``pooling`` needs it. A backbone may return less than every
        position when the head reads less (text backbones: the pooled position alone, (B, 1, C) with attention
        None, for "cls" and "last"); ``pool`` then reads the same vector it would from the full output."""
        return self.features(batch)

    def count(self, batch: dict) -> int:
        raise NotImplementedError

    @property
    def blocks(self) -> list[nn.Module]:
        return []

    def adapt_weights(self, weights: dict[str, torch.Tensor], source: dict, where: str
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Backbone weights (keys without the ``backbone.`` prefix) of a checkpoint whose backbone config was
        ``source`` (a dict), made to fit this backbone. Returns (weights, notes saying what was changed); raises a
        ``UserError`` naming ``where`` when they cannot fit. Text backbones take weights as they are."""
        return weights, []


class TextBackbone(Backbone):
    """Token-sequence backbones: ``batch`` holds ``input_ids`` (B, T) and optionally ``attention`` and
    ``token_type_ids``; they count tokens, padding included (what the matmuls process)."""

    def features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention = batch.get("attention")
        return self(batch["input_ids"], attention=attention, token_type_ids=batch.get("token_type_ids")), attention

    # Whether forward() takes ``select=`` (one position per row computed in the last block): Encoder, Decoder.
    selects_positions = False

    def features_for(self, batch: dict, pooling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """With "cls" or "last" pooling a backbone that ``selects_positions`` computes its last block at the
        pooled position alone: (B, 1, C) and attention None, which ``pool`` reads as the same vector."""
        if pooling not in ("cls", "last") or not self.selects_positions:
            return self.features(batch)
        input_ids, attention = batch["input_ids"], batch.get("attention")
        if pooling == "cls":
            index = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        elif attention is None:
            index = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:  # the last real token under right padding, as pool() finds it
            index = attention.long().sum(1).clamp(min=1) - 1
        hidden = self(input_ids, attention=attention, token_type_ids=batch.get("token_type_ids"), select=index)
        return hidden, None

    def count(self, batch: dict) -> int:
        return batch["input_ids"].numel()


def layer_groups(backbone: Backbone, heads: nn.Module | None = None) -> list[list[nn.Parameter]]:
    """ULMFiT's layer groups, bottom first: the stem, each block, then the heads.

    Parameters registered before the first block form the stem group (embeddings, patch or convolutional stem);
    those registered after the last block (a final LayerNorm) join the last block's group. Every parameter of the
    backbone and the heads is in exactly one group; a backbone without blocks gives [stem, heads].
    """
    blocks = [list(b.parameters()) for b in backbone.blocks]
    in_blocks = {id(p) for ps in blocks for p in ps}
    before, after, seen_block = [], [], False
    for p in backbone.parameters():  # registration order
        if id(p) in in_blocks:
            seen_block = True
        else:
            (after if seen_block else before).append(p)
    if blocks:
        blocks[-1] = blocks[-1] + after
    else:
        before += after
    groups = [before, *blocks]
    if heads is not None:
        groups.append(list(heads.parameters()))
    return groups
