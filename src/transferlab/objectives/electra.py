"""ELECTRA: replaced token detection (Clark et al. 2020).

A small generator (a masked LM a quarter of the discriminator's width, the size range the paper found best) fills
the masked positions with tokens sampled from its own predictions; the discriminator reads the result and
predicts, for every position, whether the token is the original. The discriminator learns from all positions,
not only the 15% masked, and it is what transfers: it is the module's ``backbone``. The generator lives under
``heads.generator.*`` so ``from_pretrained`` drops it with the other pretraining heads.

The corruption draws the masking (``mlm.mask_tokens``, 80/10/10) and one uniform number per position; the
generator's sample is the inverse CDF of its distribution at that number, so the whole batch, sampling included,
is a pure function of the seeded generator. A sample that equals the original token counts as original, as in
the paper. The generator does not share embeddings with the discriminator (the paper's tying needs a projection
between the two widths); the two are trained jointly, loss = generator MLM + 50 x discriminator BCE.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import LMHead
from ..models import build_backbone
from ..models.config import ModelConfig
from ..models.layers import init_weights
from .base import TaskModule, require_family
from .mlm import IGNORE, N_SPECIAL, MLMCorruption, mask_tokens
from .plm import with_cls

GENERATOR_DIVISOR = 4
DISCRIMINATOR_WEIGHT = 50.0  # the paper's lambda


def generator_config(cfg: ModelConfig) -> ModelConfig:
    """The generator: the discriminator's depth at a quarter of its width (64-dim heads, at least one)."""
    d = max(cfg.d_model // GENERATOR_DIVISOR, 16)
    return replace(cfg, d_model=d, n_head=max(1, d // 64), d_ff=4 * d)


def sample_tokens(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: (N, V) logits and (N,) uniforms in [0, 1) -> (N,) token ids. Special tokens are
    never drawn."""
    logits = logits.float().clone()
    logits[:, :N_SPECIAL] = float("-inf")
    cdf = torch.softmax(logits, -1).cumsum(-1)  # (N, V)
    # right=True: the first token whose cdf exceeds u, so zero-probability tokens (specials) are never returned
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return picked.clamp(max=logits.shape[1] - 1)


def replace_tokens(original: torch.Tensor, selected: torch.Tensor, sampled: torch.Tensor):
    """Put the generator's samples at the selected positions. Returns (discriminator inputs, is_replaced): a
    position is replaced iff its token differs from the original."""
    inputs = original.clone()
    inputs[selected] = sampled
    return inputs, inputs != original


class ElectraCorruption(MLMCorruption):
    """blocks (B, T-1) -> the generator's masked input (with [CLS]), the clean tokens, the MLM labels, and one
    uniform per position for the generator's sample."""

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        ids = with_cls(blocks, self.cls_id)
        inputs, labels = mask_tokens(ids, self.vocab_size, self.mask_id, generator, self.mask_prob)
        return {"input_ids": inputs, "original_ids": ids, "labels": labels,
                "sample_u": torch.rand(ids.shape, generator=generator)}


class Generator(nn.Module):
    """The generator's encoder and its tied LM head, kept together under one head name."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = build_backbone(cfg)
        self.lm = LMHead(cfg, self.encoder.wte)


class Electra(TaskModule):
    kind = "electra"
    perplexity_of = "generator_loss"

    def __init__(self, backbone):
        require_family(backbone, self.kind, ("encoder",))
        super().__init__(backbone)
        cfg = backbone.config
        self.heads["generator"] = Generator(generator_config(cfg))
        # ELECTRA's discriminator head: dense + GELU, then one logit per position
        self.heads["discriminator"] = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                                    nn.Linear(cfg.d_model, 1))
        init_weights(self.heads["discriminator"], cfg.init_std)

    def forward(self, batch: dict) -> dict:
        gen = self.heads["generator"]
        attention = batch.get("attention")
        labels = batch["labels"]
        selected = labels != IGNORE
        gen_hidden = gen.encoder(batch["input_ids"], attention=attention)[selected]
        gen_loss = gen.lm.loss(gen_hidden, labels[selected])
        with torch.no_grad():  # the sample is data for the discriminator: no gradient flows through it
            sampled = sample_tokens(gen.lm(gen_hidden.detach()), batch["sample_u"][selected])
        inputs, replaced = replace_tokens(batch["original_ids"], selected, sampled)
        hidden = self.backbone(inputs, attention=attention)
        logits = self.heads["discriminator"](hidden).squeeze(-1).float()
        real = torch.ones_like(replaced) if attention is None else attention.bool()
        disc_loss = F.binary_cross_entropy_with_logits(logits[real], replaced[real].float())
        accuracy = ((logits[real] > 0) == replaced[real]).float().mean()
        return {"loss": gen_loss + DISCRIMINATOR_WEIGHT * disc_loss, "generator_loss": gen_loss.detach(),
                "discriminator_loss": disc_loss.detach(), "discriminator_accuracy": accuracy,
                "replaced": replaced, "labels": replaced[real], "n_predictions": int(real.sum())}
