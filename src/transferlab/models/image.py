"""What the image backbones (``resnet.py``, ``vit.py``) share: the config base class, the ``pixels`` side of the
backbone contract, and how a checkpoint's weights are fitted to a backbone made for other inputs.

Two input differences are common enough in transfer to fit rather than refuse, and both are what timm does when it
loads a pretrained model for another input: a different number of channels (an RGB checkpoint on grayscale
MedMNIST, or the reverse) adapts the first convolution (``adapt_input_conv``), and a ViT at another image size
resamples its position table (``vit.resample_positions``). Every other difference changes what the weights compute,
so ``check_fit`` refuses it with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .base import Backbone, JsonConfig

# Config fields that may differ between a checkpoint and the backbone its weights are loaded into: the input
# (adapted by adapt_weights) and settings that do not touch the weights once they are loaded.
ADAPTABLE = ("in_channels", "image_size", "dropout", "init_std", "zero_init_residual")


@dataclass
class ImageConfig(JsonConfig):
    """Base of the image backbones' configs: JSON round-trip and the attributes the heads read.

    Heads pool the mean of the positions (patches, feature-map cells): global average pooling, the standard image
    classifier input (ResNet; ViT without a [CLS] token, Beyer et al. 2022).
    """

    modality = "image"  # class attributes: not fields, not in config.json
    default_pooling = "mean"

    def _check_common(self, family: str) -> None:
        """Validation every image config shares; ``family`` is the one its class builds."""
        if self.family != family:
            raise UserError(f"{type(self).__name__} builds family '{family}', not '{self.family}'; use the config "
                            f"class of that family (models.CONFIGS['{self.family}']) or family='{family}'.")
        if not (isinstance(self.in_channels, int) and self.in_channels >= 1):
            raise UserError(f"in_channels={self.in_channels!r}: an image has at least one channel (1 for "
                            f"grayscale, 3 for RGB).")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout={self.dropout} must be in [0, 1).")
        if not self.init_std > 0:
            raise UserError(f"init_std={self.init_std} must be positive.")


def positive_ints(name: str, values, length: int | None = None) -> tuple[int, ...]:
    """``values`` (a list from JSON, or a tuple) as a tuple of positive ints, or a UserError naming ``name``."""
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise UserError(f"{name}={values!r} must be a non-empty list of positive integers.")
    if length is not None and len(values) != length:
        raise UserError(f"{name}={values!r} must have {length} entries.")
    return values


class ImageBackbone(Backbone):
    """Backbones that read ``batch["pixels"]``: float (B, C, H, W), already normalised by the image inputs. They
    count images."""

    modality = "image"
    unit = "images"

    def features(self, batch: dict) -> tuple[torch.Tensor, None]:
        return self(batch["pixels"]), None  # every position (patch, feature-map cell) is real

    def count(self, batch: dict) -> int:
        return batch["pixels"].shape[0]

    def check_pixels(self, pixels: torch.Tensor, image_size: tuple[int, int] | None = None) -> None:
        """A UserError unless ``pixels`` is a float (B, C, H, W) batch with this backbone's channels (and
        ``image_size`` when given): a cheap check that turns a deep shape error into the fix."""
        cfg = self.config
        if pixels.dim() != 4 or not pixels.is_floating_point():
            raise UserError(f"image backbones read float pixels (B, C, H, W), already normalised by the image "
                            f"inputs; got {str(pixels.dtype).replace('torch.', '')} {tuple(pixels.shape)}.")
        if pixels.shape[1] != cfg.in_channels:
            raise UserError(f"the images have {pixels.shape[1]} channels but the {cfg.family} backbone was built "
                            f"for in_channels={cfg.in_channels}; convert the images (the inputs' channels setting) "
                            f"or build the model with in_channels={pixels.shape[1]} (a checkpoint's first "
                            f"convolution is adapted when it loads).")
        if image_size is not None and tuple(pixels.shape[2:]) != tuple(image_size):
            raise UserError(f"the images are {pixels.shape[2]}x{pixels.shape[3]} but the {cfg.family} backbone was "
                            f"built for image_size={tuple(image_size)}; resize them (the inputs' image size) or "
                            f"build the model for that size (a checkpoint's position table is resampled when it "
                            f"loads).")


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> tuple[torch.Tensor, str]:
    """The first convolution's weight (O, I, kh, kw) made for ``in_channels`` inputs, by timm's rule.

    To one channel the filters are summed, so a grayscale image x gives what the original model gave on x copied
    into every channel. Otherwise the filters are repeated to cover the new channels and scaled by I / in_channels,
    which keeps the output of an image whose channels are all equal (exactly when I divides in_channels).

    Returns:
        (weight (O, in_channels, kh, kw), a note saying what was done).
    """
    old = weight.shape[1]
    w = weight.float()
    if in_channels == 1:
        adapted = w.sum(1, keepdim=True)
        note = f"adapted the first convolution from {old} to 1 input channels by summing its filters (timm's rule)"
    else:
        repeats = -(-in_channels // old)  # ceil
        adapted = w.repeat(1, repeats, 1, 1)[:, :in_channels] * (old / in_channels)
        note = (f"adapted the first convolution from {old} to {in_channels} input channels by repeating its "
                f"filters and scaling them by {old}/{in_channels} (timm's rule)")
    return adapted.to(weight.dtype), note


def source_config(cfg: ImageConfig, source: dict, where: str) -> ImageConfig:
    """The checkpoint's backbone config dict ``source`` as a config of ``cfg``'s class, or a UserError naming
    ``where`` when it is another family or unreadable."""
    family = source.get("family")
    if family != cfg.family:
        raise UserError(f"the checkpoint {where} holds a '{family}' backbone, but this model is a '{cfg.family}'; "
                        f"its weights cannot fit. Use --init scratch, or a {cfg.family} checkpoint.")
    try:
        return type(cfg).from_dict(source)
    except UserError as e:
        raise UserError(f"the backbone config of {where} cannot be read: {e}") from None


def check_fit(backbone: ImageBackbone, weights: dict[str, torch.Tensor], source: ImageConfig, where: str) -> None:
    """A UserError naming ``where`` unless ``weights`` (already adapted to the input) load into ``backbone``: the
    checkpoint's architecture (every field but the ADAPTABLE ones) must equal this one's, and every tensor must
    be there with this backbone's shape.

    Fields are compared, not only shapes, because some differences load silently but compute something else
    (n_head, activation)."""
    mine, theirs = backbone.config.to_dict(), source.to_dict()
    differ = [f"{k} {theirs[k]} in the checkpoint, {mine[k]} here" for k in mine
              if k not in ADAPTABLE and mine[k] != theirs[k]]
    if not differ:  # same config, yet the tensors disagree: the weights file does not belong to it
        own = backbone.state_dict()
        differ = [f"{k} is missing" for k in own if k not in weights]
        differ += [f"{k} is not part of this backbone" for k in weights if k not in own]
        differ += [f"{k} is {tuple(weights[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                   for k, v in own.items() if k in weights and weights[k].shape != v.shape]
        if len(differ) > 4:
            differ = differ[:4] + [f"{len(differ) - 4} more"]
    if differ:
        raise UserError(f"the weights of {where} do not fit this {backbone.config.family} backbone: "
                        f"{'; '.join(differ)}. Only the input can be adapted (in_channels; image_size for a ViT "
                        f"whose patch size divides it). Use --init scratch to train this architecture from random "
                        f"weights, or a checkpoint of the same architecture.")
