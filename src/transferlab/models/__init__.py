"""Backbones. ``build_backbone(config)`` picks the class from the config's family."""

from .config import PRESETS, ModelConfig, preset
from .decoder import Decoder
from .embedding import WordVectors
from .encoder import Encoder
from .encoder_decoder import EncoderDecoder
from .rnn import BiLSTM

BACKBONES = {"encoder": Encoder, "decoder": Decoder, "encoder_decoder": EncoderDecoder, "embedding": WordVectors,
             "rnn": BiLSTM}


def build_backbone(cfg: ModelConfig):
    return BACKBONES[cfg.family](cfg)


def config_from_dict(d: dict):
    """A backbone config from its config.json form."""
    return ModelConfig.from_dict(d)


__all__ = ["PRESETS", "ModelConfig", "preset", "Encoder", "Decoder", "EncoderDecoder", "build_backbone", "BACKBONES",
           "config_from_dict",
           "WordVectors", "BiLSTM"]
