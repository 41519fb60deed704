"""Backbones. ``build_backbone(config)`` picks the class from the config's family."""

from .config import PRESETS, ModelConfig, preset
from .decoder import Decoder
from .encoder import Encoder
from .encoder_decoder import EncoderDecoder

BACKBONES = {"encoder": Encoder, "decoder": Decoder, "encoder_decoder": EncoderDecoder}


def build_backbone(cfg: ModelConfig):
    return BACKBONES[cfg.family](cfg)


__all__ = ["PRESETS", "ModelConfig", "preset", "Encoder", "Decoder", "EncoderDecoder", "build_backbone", "BACKBONES"]
