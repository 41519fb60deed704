"""Masked image modelling: MAE (He et al. 2021), BERT's fill-in-the-blank for pixels, on the ViT.

Corruption (``PatchMasking``, pure data, seeded by the batch): each image keeps a random ``1 - mask_ratio`` of its
patches (75% are masked by default), as MAE's per-sample shuffle does; the batch gains ``visible`` and ``masked``
patch indices. The module embeds every patch (the patch embedding is one cheap convolution), then **encodes only the
visible ones** — the encoder, the expensive part, sees a quarter of the tokens — and a small decoder, given the
encoded visible tokens and a shared learned mask token at every masked position (with its own position table),
reconstructs the masked patches. The target is each patch's pixels normalised by that patch's own mean and
variance (MAE's ``norm_pix_loss``, which the paper found gives better features), and the loss is the mean squared
error over the **masked patches only**; the prediction layer runs on those positions alone (sparse prediction).

Decoder size. MAE's decoder is deliberately lightweight (ViT-L's has 8 blocks of width 512, under 10% of the
encoder's compute per token). Here it has ``decoder_layers`` blocks (2 by default) of half the encoder's width,
32 channels per head (vit-tiny 128 -> 64 wide, 2 heads; vit-mini 192 -> 96 wide, 3 heads), with the encoder's
MLP ratio of 4: for vit-mini that is 0.23M parameters against the encoder's 2.7M. MAE's ablation (table 1a)
shows a deeper decoder helps the linear probe more than fine-tuning; ``--decoder-layers`` trades CPU time for it.

The decoder and its mask token live under ``heads.decoder``: transfer drops them and keeps the ViT.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..errors import UserError
from ..heads.heads import pool
from ..models.layers import Block, init_weights
from .base import TaskModule

HEAD_SIZE = 32  # decoder channels per attention head


def check_mask_ratio(ratio: float, n_patches: int | None = None) -> None:
    """A UserError unless ``ratio`` lies in (0, 1) and (given ``n_patches``) leaves at least one patch visible and
    one masked."""
    if not (isinstance(ratio, (int, float)) and 0.0 < ratio < 1.0):
        raise UserError(f"--mask-ratio {ratio}: the fraction of patches MAE masks must lie strictly between 0 and 1 "
                        f"(0.75 is MAE's default; 0 would leave nothing to reconstruct, 1 nothing to see).")
    if n_patches is not None:
        keep = int(n_patches * (1 - ratio))
        if keep < 1 or keep >= n_patches:
            raise UserError(f"--mask-ratio {ratio} keeps {keep} of the image's {n_patches} patches visible; MAE "
                            f"needs at least one visible and one masked patch. Choose a ratio between "
                            f"{1 / n_patches:.3f} and {1 - 1 / n_patches:.3f}, or a smaller --model patch size.")


class PatchMasking:
    """MAE's random masking as a corruption: ``(batch, generator) -> batch`` plus ``visible`` (B, n_keep) and
    ``masked`` (B, N - n_keep) int64 patch indices, each sorted, drawn per image from ``generator`` alone.

    ``n_keep = int(N * (1 - mask_ratio))``, as MAE computes it: 12 of a 28x28 image's 49 4x4 patches at 0.75.
    """

    def __init__(self, n_patches: int, mask_ratio: float = 0.75):
        check_mask_ratio(mask_ratio, n_patches)
        self.n_patches, self.mask_ratio = n_patches, mask_ratio
        self.n_keep = int(n_patches * (1 - mask_ratio))

    def __repr__(self) -> str:
        return f"PatchMasking(n_patches={self.n_patches}, mask_ratio={self.mask_ratio}, n_keep={self.n_keep})"

    def __call__(self, batch: dict, generator: torch.Generator) -> dict:
        b = batch["pixels"].shape[0]
        order = torch.rand(b, self.n_patches, generator=generator).argsort(1)  # a random permutation per image
        visible, _ = order[:, :self.n_keep].sort(1)
        masked, _ = order[:, self.n_keep:].sort(1)
        return {**batch, "visible": visible, "masked": masked}


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, n) -> x at those positions, (B, n, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class MAEDecoder(nn.Module):
    """Encoded visible tokens -> predicted pixels of the patches asked for. Holds the mask token."""

    def __init__(self, encoder_cfg, layers: int, width: int, n_head: int):
        super().__init__()
        # The decoder's blocks are the ViT's own (pre-norm, GELU) at the decoder's width and depth.
        cfg = replace(encoder_cfg, d_model=width, n_head=n_head, d_ff=4 * width, n_layer=layers, dropout=0.0)
        self.config = cfg
        p, c = cfg.patch_size, cfg.in_channels
        self.embed = nn.Linear(encoder_cfg.d_model, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_patches, width))
        self.h = nn.ModuleList(Block(cfg) for _ in range(layers))
        self.ln = nn.LayerNorm(width, eps=cfg.norm_eps)
        self.pred = nn.Linear(width, p * p * c)
        init_weights(self, cfg.init_std)
        nn.init.normal_(self.mask_token, std=cfg.init_std)
        nn.init.trunc_normal_(self.pos_embed, std=cfg.init_std, a=-2 * cfg.init_std, b=2 * cfg.init_std)

    def forward(self, latent: torch.Tensor, visible: torch.Tensor, targets: torch.Tensor | None = None
                ) -> torch.Tensor:
        """latent (B, n_keep, d) at patch indices ``visible`` (B, n_keep) -> predicted patches (B, n, p·p·C) at
        the indices ``targets`` (B, n) (every patch when None)."""
        x = self.embed(latent)  # (B, n_keep, w)
        b, w = x.shape[0], x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(b, self.pos_embed.shape[1], w)  # (B, N, w)
        full = full.scatter(1, visible.unsqueeze(-1).expand(-1, -1, w), x) + self.pos_embed
        for block in self.h:
            full = block(full)
        full = self.ln(full)
        if targets is not None:
            full = _gather(full, targets)  # (B, n, w): predict only what the loss reads
        return self.pred(full)


class MaskedAutoencoder(TaskModule):
    """A ViT + MAE's decoder. ``forward(batch)`` reads ``pixels`` (B, C, H, W) and the ``visible`` / ``masked``
    patch indices of ``PatchMasking``."""

    kind = "mae"
    perplexity_of = None
    views = 0
    min_batch = 1

    def __init__(self, backbone: nn.Module, mask_ratio: float = 0.75, decoder_layers: int = 2,
                 decoder_width: int | None = None, norm_pix: bool = True):
        if backbone.config.family != "vit":
            raise UserError(f"MAE masks patches of a Vision Transformer and encodes only the visible ones; a "
                            f"'{backbone.config.family}' backbone has no patches to leave out (a convolution sees "
                            f"the whole image). Use a ViT preset (--model vit-tiny, vit-mini or vit-small), or "
                            f"--objective simclr / byol for a {backbone.config.family}.")
        super().__init__(backbone)
        cfg = backbone.config
        check_mask_ratio(mask_ratio, cfg.n_patches)
        if not (isinstance(decoder_layers, int) and decoder_layers >= 1):
            raise UserError(f"--decoder-layers {decoder_layers}: MAE's decoder needs at least one block.")
        width = decoder_width or max(HEAD_SIZE, cfg.d_model // 2 // HEAD_SIZE * HEAD_SIZE)
        if width % HEAD_SIZE:
            raise UserError(f"decoder_width={width} must be a multiple of {HEAD_SIZE} (channels per head).")
        self.mask_ratio, self.norm_pix = float(mask_ratio), bool(norm_pix)
        self.heads["decoder"] = MAEDecoder(cfg, decoder_layers, width, width // HEAD_SIZE)

    def task_config(self) -> dict:
        d = self.heads["decoder"]
        return {"kind": self.kind, "mask_ratio": self.mask_ratio, "decoder_layers": len(d.h),
                "decoder_width": d.config.d_model, "norm_pix": self.norm_pix}

    def corruption(self) -> PatchMasking:
        return PatchMasking(self.backbone.config.n_patches, self.mask_ratio)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) -> the mean of every patch's encoding, (N, d): what transfers (no mask)."""
        hidden, attention = self.backbone.features({"pixels": pixels})
        return pool(hidden, attention, "mean")

    def targets(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs: each patch's pixels (B, N, p·p·C), normalised by the patch's own mean
        and variance when ``norm_pix`` (a flat patch becomes zeros)."""
        patches = self.backbone.patchify(pixels.float())
        if not self.norm_pix:
            return patches
        mean = patches.mean(-1, keepdim=True)
        var = patches.var(-1, keepdim=True)
        return (patches - mean) / (var + 1e-6).sqrt()

    def encode_visible(self, pixels: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Encode only the patches at ``visible`` (B, n_keep): (B, n_keep, d)."""
        tokens = self.backbone.embed(pixels)  # (B, N, d), positions added
        return self.backbone.encode(_gather(tokens, visible))

    def forward(self, batch: dict) -> dict:
        pixels, visible, masked = batch["pixels"], batch.get("visible"), batch.get("masked")
        if visible is None or masked is None:
            raise UserError("MAE reads 'visible' and 'masked' patch indices besides 'pixels'; make the batches with "
                            "the objective's corruption (MaskedAutoencoder.corruption(), which the pretrain recipe "
                            "applies).")
        pred = self.heads["decoder"](self.encode_visible(pixels, visible), visible, masked)  # (B, n_mask, P)
        target = _gather(self.targets(pixels), masked)
        loss = (pred.float() - target).pow(2).mean()
        return {"loss": loss, "n_predictions": masked.numel()}

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> torch.Tensor:
        """The decoder's prediction for every patch (B, N, p·p·C), in the target's units (normalised per patch
        when ``norm_pix``): to look at, and to check the loss against."""
        latent = self.encode_visible(batch["pixels"], batch["visible"])
        return self.heads["decoder"](latent, batch["visible"]).float()
