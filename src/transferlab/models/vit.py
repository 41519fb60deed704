"""Vision Transformer (Dosovitskiy et al. 2021): the image cut into patches, each patch a token, then the text
encoder's transformer blocks (``layers.Block``, pre-norm, reused unchanged) and a final LayerNorm.

No [CLS] token: the head mean-pools the patch tokens (global average pooling), as in Beyer et al. 2022 ("Better
plain ViT baselines") and MAE's fine-tuning, so the classifier reads the same thing for a ViT as for a ResNet.

The pieces masked image modelling needs are public: ``embed`` (patch tokens + positions), ``encode`` (blocks + final
norm over any subset of tokens, e.g. the visible ones), and ``patchify`` / ``unpatchify`` (pixels <-> per-patch
targets, in MAE's layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .image import ImageBackbone, ImageConfig, adapt_input_conv, check_fit, positive_ints, source_config
from .layers import Block, Dropout, init_weights


@dataclass
class ViTConfig(ImageConfig):
    """A ViT over ``image_size`` (H, W) images cut into ``patch_size`` squares: (H/p)·(W/p) tokens.

    Besides its own fields it has what ``layers.Block`` reads (``norm_first``, ``d_ff``, ``activation``,
    ``norm_eps``, ``n_head``, ``dropout``), so the blocks are the text encoder's. ``dropout`` is used in the blocks
    and by the classification head.
    """

    family: str = "vit"
    image_size: tuple[int, int] = (28, 28)
    patch_size: int = 4
    in_channels: int = 1
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 2
    d_ff: int = 0  # 0 -> 4 * d_model
    dropout: float = 0.0
    norm_eps: float = 1e-6  # ViT's (timm, big_vision)
    activation: str = "gelu"  # "gelu" (erf, ViT) or "gelu_tanh"
    init_std: float = 0.02

    def __post_init__(self):
        self._check_common("vit")
        size = self.image_size
        self.image_size = positive_ints("image_size", (size, size) if isinstance(size, int) else size, length=2)
        for name in ("patch_size", "n_layer", "d_model", "n_head"):
            positive_ints(name, getattr(self, name), length=1)
        if self.d_ff == 0:
            self.d_ff = 4 * self.d_model
        positive_ints("d_ff", self.d_ff, length=1)
        H, W = self.image_size
        if H % self.patch_size or W % self.patch_size:
            raise UserError(f"patch_size={self.patch_size} does not divide image_size={self.image_size}; choose a "
                            f"patch size that divides both sides (e.g. 4 for 28x28 or 32x32), or resize the "
                            f"images.")
        if self.d_model % self.n_head:
            raise UserError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}.")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise UserError(f"unknown activation '{self.activation}'; choose gelu or gelu_tanh.")

    @property
    def norm_first(self) -> bool:
        return True  # pre-norm, as every ViT

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row: (H / p, W / p)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def resample_positions(table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """A learned position table (1, h·w, d) for an (h, w) patch grid, resampled to ``new_grid`` by 2-D bicubic
    interpolation (what timm's ``resample_abs_pos_embed`` does), antialiased when it shrinks. Returns
    (1, h'·w', d); the table itself when the grids are equal."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    (h, w), d = old_grid, table.shape[-1]
    grid = table.float().reshape(1, h, w, d).permute(0, 3, 1, 2)  # (1, d, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, d).to(table.dtype)  # (1, h'w', d)


class ViT(ImageBackbone):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        # stem: patch embedding and positions, registered before the blocks (layer_groups' stem group)
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.d_model, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_patches, cfg.d_model))
        self.drop = Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        init_weights(self, cfg.init_std)
        # MAE's init for the patch embedding: Xavier-uniform on the flattened filter, as for the linear layer it is
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.pos_embed, std=cfg.init_std, a=-2 * cfg.init_std, b=2 * cfg.init_std)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.h)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, H, W) -> patch tokens with their positions added, (B, N, d), patches in row-major order."""
        self.check_pixels(pixels, self.config.image_size)
        x = self.patch_embed(pixels)  # (B, d, H/p, W/p)
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, d)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, n, d), any subset of ``embed``'s (positions already added) -> hidden (B, n, d)."""
        x = self.drop(tokens)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, H, W) -> hidden (B, N, d), one position per patch."""
        return self.encode(self.embed(pixels))

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, H, W) -> patches (B, N, p·p·C), row-major over the grid, each patch's pixels row by row
        with the channels last (MAE's layout)."""
        B, C, H, W = pixels.shape
        p = self.config.patch_size
        x = pixels.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)  # (B, h·w, p·p·C)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, N, p·p·C) in ``patchify``'s layout -> pixels (B, C, H, W) of this ViT's image size."""
        B = patches.shape[0]
        p, C, (h, w) = self.config.patch_size, self.config.in_channels, self.config.grid
        x = patches.reshape(B, h, w, p, p, C)  # (B, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * p, w * p)  # (B, C, H, W)

    def adapt_weights(self, weights: dict[str, torch.Tensor], source: dict, where: str
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Fit a checkpoint's ViT to this one: another channel count adapts the patch embedding (timm's rule);
        another image size that the same patch size divides resamples the position table. Anything else is a
        UserError naming ``where``."""
        src = source_config(self.config, source, where)
        cfg = self.config
        weights, notes = dict(weights), []
        if src.in_channels != cfg.in_channels and "patch_embed.weight" in weights:
            weights["patch_embed.weight"], note = adapt_input_conv(weights["patch_embed.weight"], cfg.in_channels)
            notes.append(note)
        table = weights.get("pos_embed")
        if (src.image_size != cfg.image_size and src.patch_size == cfg.patch_size and table is not None
                and table.shape == (1, src.n_patches, cfg.d_model)):
            weights["pos_embed"] = resample_positions(table, src.grid, cfg.grid)
            notes.append(f"resampled the position table from a {src.grid[0]}x{src.grid[1]} to a "
                         f"{cfg.grid[0]}x{cfg.grid[1]} patch grid (images {src.image_size[0]}x{src.image_size[1]} "
                         f"-> {cfg.image_size[0]}x{cfg.image_size[1]}) by bicubic interpolation (timm's rule)")
        check_fit(self, weights, src, where)
        return weights, notes
