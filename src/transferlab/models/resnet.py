"""ResNet for small images (He et al. 2016), as the CIFAR-style ResNets build it: a 3x3 stem without max-pooling,
then stages of BasicBlocks, each stage after the first halving the feature map.

ImageNet's stem (7x7 stride-2 conv + max-pool) shrinks a 28x28 image to 7x7 before the first block; the CIFAR stem
(3x3, stride 1) keeps the full resolution for the first stage, which is what small images need. Names follow
torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample``) so its trunk weights map one to one.

The trunk returns its last feature map flattened to (B, H'·W', C): the mean-pooling head is then global average
pooling, as in ResNet's own classifier.

The convolutions run in ``torch.channels_last`` (NHWC) memory format: the weights are stored that way from
construction and the input is converted in ``forward``. oneDNN's CPU convolutions work in NHWC, so an NCHW model
pays a reorder around every convolution; channels-last made a bf16 training step of resnet-mini / resnet-small
about 15-20% faster on the Zen 4 CPU (``benchmarks/images.py``, docs/performance.md). Only the layout changes:
the same numbers up to float rounding, ``state_dict`` keys and shapes unchanged, and checkpoints are written
contiguous. Reshapes go through ``flatten``/``transpose`` rather than ``view``, which is valid in both layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .image import ImageBackbone, ImageConfig, adapt_input_conv, check_fit, positive_ints, source_config


@dataclass
class ResNetConfig(ImageConfig):
    """A ResNet: ``widths[i]`` channels and ``depths[i]`` BasicBlocks in stage i. The stem has ``widths[0]``
    channels. ``dropout`` and ``init_std`` are the classification head's (the trunk has no dropout, and its
    convolutions take Kaiming's init)."""

    family: str = "resnet"
    in_channels: int = 1
    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (1, 1, 1)
    dropout: float = 0.0
    init_std: float = 0.02
    # Goyal et al. 2017: the last BatchNorm of every block starts at gamma = 0, so each block starts as the
    # identity and the signal of a deep net starts as that of a shallow one.
    zero_init_residual: bool = True

    def __post_init__(self):
        self._check_common("resnet")
        self.widths = positive_ints("widths", self.widths)
        self.depths = positive_ints("depths", self.depths)
        if len(self.widths) != len(self.depths):
            raise UserError(f"widths {self.widths} and depths {self.depths} must have one entry per stage each "
                            f"({len(self.widths)} against {len(self.depths)}).")

    @property
    def d_model(self) -> int:
        """The feature width: the last stage's channels."""
        return self.widths[-1]


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)  # BatchNorm follows: a bias is redundant


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual. A block that changes the width or the resolution projects its
    shortcut with a 1x1 conv + BatchNorm (He et al.'s option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut, inplace=True)


class ResNet(ImageBackbone):
    # The layout the convolutions run in (see the module docstring); torch.contiguous_format gives plain NCHW.
    memory_format = torch.channels_last

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.config = cfg
        # stem first, then the stages, so layer_groups sees the stem before the first block
        self.conv1 = conv3x3(cfg.in_channels, cfg.widths[0])
        self.bn1 = nn.BatchNorm2d(cfg.widths[0])
        c_in = cfg.widths[0]
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in if j == 0 else width, width, stride if j == 0 else 1) for j in range(depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = width
        self._init_weights()
        self.to(memory_format=self.memory_format)  # the conv weights; 1-D BatchNorm parameters have no layout

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_residual:
            for block in self.blocks:
                nn.init.zeros_(block.bn2.weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.widths))]

    @property
    def blocks(self) -> list[nn.Module]:
        return [block for stage in self.stages for block in stage]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, H, W) -> hidden (B, H'·W', widths[-1]), H' = H / 2^(stages - 1) rounded up."""
        self.check_pixels(pixels)
        x = pixels.contiguous(memory_format=self.memory_format)  # no copy for one channel: NCHW is NHWC then
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        for stage in self.stages:
            x = stage(x)
        # (B, C, H', W') -> (B, H'W', C): a view in either layout, and contiguous in channels-last
        return x.flatten(2).transpose(1, 2)

    def adapt_weights(self, weights: dict[str, torch.Tensor], source: dict, where: str
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Fit a checkpoint's trunk to this one: another channel count adapts the stem conv (timm's rule); the
        image size needs nothing (the trunk is convolutional). Anything else is a UserError naming ``where``."""
        src = source_config(self.config, source, where)
        weights, notes = dict(weights), []
        if src.in_channels != self.config.in_channels and "conv1.weight" in weights:
            weights["conv1.weight"], note = adapt_input_conv(weights["conv1.weight"], self.config.in_channels)
            notes.append(note)
        check_fit(self, weights, src, where)
        return weights, notes
