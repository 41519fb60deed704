"""Backbones. ``build_backbone(config)`` picks the class from the config's family; ``config_from_dict`` picks the
config class (what ``config.json``'s ``backbone`` rebuilds through).

Text presets live in ``config.py`` (the small BERTs). Image presets are below: the published ResNet and ViT
families scaled down for 28x28 images on a CPU, with tiny ones for tests. Audio presets live in ``audio.py`` (the
Keyword Transformer's widths).
"""

from ..errors import UserError
from .audio import AUDIO_PRESETS, AudioConfig, AudioTransformer, audio_preset
from .config import FAMILIES as TEXT_FAMILIES
from .config import PRESETS, ModelConfig, preset
from .decoder import Decoder
from .embedding import WordVectors
from .encoder import Encoder
from .encoder_decoder import EncoderDecoder
from .resnet import ResNet, ResNetConfig
from .rnn import BiLSTM
from .vit import ViT, ViTConfig

BACKBONES = {"encoder": Encoder, "decoder": Decoder, "encoder_decoder": EncoderDecoder, "embedding": WordVectors,
             "rnn": BiLSTM, "resnet": ResNet, "vit": ViT, "audio_transformer": AudioTransformer}
CONFIGS = {**{family: ModelConfig for family in TEXT_FAMILIES}, "resnet": ResNetConfig, "vit": ViTConfig,
           "audio_transformer": AudioConfig}

# Sizes below: parameters with one input channel, and forward GFLOPs per 28x28 image counted with
# torch.utils.flop_counter. The families pair up at about equal parameters and compute, so a ResNet-vs-ViT
# comparison can be a fair one: resnet-small ~ vit-mini (2.8M/0.23 vs 2.7M/0.26), resnet18 ~ vit-small
# (11.2M/0.91 vs 10.7M/1.04).
IMAGE_PRESETS: dict[str, dict] = {
    # ResNet-8 (one block per stage) of the CIFAR ResNets' widths: the test preset. 0.08M, 0.02 GFLOPs.
    "resnet-tiny": dict(family="resnet", widths=(16, 32, 64), depths=(1, 1, 1)),
    # ResNet-20, the CIFAR ResNet of He et al. 2016 (3 stages x 3 blocks, 16/32/64). 0.27M, 0.06 GFLOPs.
    "resnet-mini": dict(family="resnet", widths=(16, 32, 64), depths=(3, 3, 3)),
    # ResNet-18's layout at half its width. 2.8M, 0.23 GFLOPs.
    "resnet-small": dict(family="resnet", widths=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
    # ResNet-18 (widths 64..512, 2 blocks per stage) with the CIFAR stem. 11.2M, 0.91 GFLOPs.
    "resnet18": dict(family="resnet", widths=(64, 128, 256, 512), depths=(2, 2, 2, 2)),
    # ViTs keep ViT's head size of 64 and take their widths from the published family where they can (ViT-Ti 192,
    # ViT-S 384), so the per-layer shapes are the published ones; the depth is what shrinks (12 -> 6), to a CPU
    # budget and to pair each with a ResNet of its size. vit-tiny sits below ViT-Ti, as BERT-tiny (2/128) does.
    # Patch 4: a 28x28 image gives a 7x7 grid of 49 tokens.
    "vit-tiny": dict(family="vit", n_layer=4, d_model=128, n_head=2, patch_size=4),  # 0.8M, 0.08 GFLOPs
    "vit-mini": dict(family="vit", n_layer=6, d_model=192, n_head=3, patch_size=4),  # ViT-Ti's width, 2.7M, 0.26
    "vit-small": dict(family="vit", n_layer=6, d_model=384, n_head=6, patch_size=4),  # ViT-S's width, 10.7M, 1.04
}


def image_preset(name: str, in_channels: int = 1, image_size: tuple[int, int] = (28, 28), **overrides):
    """Build an image backbone config from a preset name.

    Args:
        name: a key of ``IMAGE_PRESETS``.
        in_channels: 1 (grayscale) or 3 (RGB), or any count.
        image_size: (H, W) of the images; a ViT's position table is made for it, a ResNet takes any size.
        overrides: any field of the preset's config class (e.g. ``dropout=0.1``, ``patch_size=7``).
    Returns:
        a ``ResNetConfig`` or ``ViTConfig``.
    """
    if name not in IMAGE_PRESETS:
        raise UserError(f"unknown image model preset '{name}' (--model); choose one of {', '.join(IMAGE_PRESETS)}.")
    kw = dict(IMAGE_PRESETS[name], in_channels=in_channels)
    cls = CONFIGS[kw["family"]]
    if cls is ViTConfig:
        kw["image_size"] = image_size
    kw.update(overrides)
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(kw) - known)
    if unknown:
        raise UserError(f"the {kw['family']} preset '{name}' has no option {', '.join(unknown)}; its options are "
                        f"{', '.join(sorted(known))}.")
    return cls(**kw)


def config_from_dict(d: dict):
    """A backbone config from its dict (``config.json``'s ``backbone``), of the class its ``family`` names."""
    family = d.get("family", "encoder")  # ModelConfig's default, for configs written without the field
    if family not in CONFIGS:
        raise UserError(f"unknown backbone family '{family}' in the model config (config.json's backbone.family); "
                        f"choose one of {', '.join(CONFIGS)}.")
    return CONFIGS[family].from_dict(d)


def build_backbone(cfg):
    """The backbone of ``cfg`` (a ``ModelConfig``, ``ResNetConfig``, ``ViTConfig`` or ``AudioConfig``), freshly
    initialised."""
    return BACKBONES[cfg.family](cfg)


__all__ = ["PRESETS", "ModelConfig", "preset", "Encoder", "Decoder", "EncoderDecoder", "build_backbone", "BACKBONES",
           "WordVectors", "BiLSTM", "ResNet", "ResNetConfig", "ViT", "ViTConfig", "IMAGE_PRESETS", "image_preset",
           "CONFIGS", "config_from_dict", "AudioConfig", "AudioTransformer", "AUDIO_PRESETS", "audio_preset"]
