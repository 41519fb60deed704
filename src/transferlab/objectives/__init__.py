"""Pretraining objectives: each is a corruption (pure data, seeded) plus a task module.

OBJECTIVES maps a text objective's name on the command line to (backbone family, module class, corruption
factory taking the tokenizer). IMAGE_OBJECTIVES maps an image objective's name to an ``ImageObjective``: which image
backbone families it trains, how to build its module for a labeled image set, and its augmentation recipe.
AUDIO_OBJECTIVES maps an audio objective's name to an ``AudioObjective``: whether its backbone is causal, its module
and its corruption.
"""

from dataclasses import dataclass
from typing import Callable

from ..errors import UserError
from .audio import APC, MASK_PROB, SHIFT, SPAN, MaskedFrames, SpanMasking, Unchanged
from .classification import TASKS, SequenceClassifier
from .contrastive import BYOL, SimCLR, byol_momentum, nt_xent
from .clm import CausalLM, CLMCorruption
from .denoising import NOISE_OPTIONS, BartCorruption, DenoisingLM, sentence_end_ids
from .electra import Electra, ElectraCorruption
from .elmo import BidirectionalLM
from .mae import MaskedAutoencoder, PatchMasking
from .mass import MassCorruption, MassLM
from .mlm import MaskedLM, MLMCorruption, mask_tokens
from .mpnet import MPNet, MPNetCorruption
from .plm import PREDICT_RATIO, PermutationLM, PLMCorruption
from .seq2seq_lm import Seq2SeqLM
from .word2vec import SkipGram, SkipGramCorruption


def _rate(given: float | None, default: float) -> float:
    """--mask-prob left unset means the objective's own published rate."""
    return default if given is None else given


def _mlm_corruption(tokenizer, mask_prob: float | None = None, **_):
    return MLMCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15),
                         tuple(tokenizer.special_ids))


def _no_rate(objective: str, given: float | None) -> None:
    if given is not None:
        raise UserError(f"--mask-prob does not apply to --objective {objective}: it corrupts nothing. Leave it out.")


def _clm_corruption(tokenizer, mask_prob: float | None = None, **_):
    _no_rate("clm", mask_prob)
    return CLMCorruption()


def _plm_corruption(tokenizer, mask_prob: float | None = None, **_):
    return PLMCorruption(tokenizer.cls_id, _rate(mask_prob, PREDICT_RATIO))


def _mpnet_corruption(tokenizer, mask_prob: float | None = None, **_):
    return MPNetCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


def _electra_corruption(tokenizer, mask_prob: float | None = None, **_):
    return ElectraCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


def _word2vec_corruption(tokenizer, mask_prob: float | None = None, **_):
    _no_rate("word2vec", mask_prob)
    return SkipGramCorruption(tokenizer.vocab_size)


def _elmo_corruption(tokenizer, mask_prob: float | None = None, **_):
    _no_rate("elmo", mask_prob)
    return CLMCorruption()  # both directions read the clean block


def _bart_corruption(tokenizer, seq_len: int = 512, noise: dict | None = None, mask_prob: float | None = None,
                     decoder_start: int | None = None, **_):
    _noise_not_rate("bart", mask_prob)
    return BartCorruption(tokenizer.mask_id, _first_decoder_input(tokenizer, decoder_start), tokenizer.eos_id,
                          tuple(sentence_end_ids(tokenizer)), max_len=seq_len, pad_id=tokenizer.pad_id,
                          **_noise_options("bart", noise))


def _mass_corruption(tokenizer, noise: dict | None = None, mask_prob: float | None = None,
                     decoder_start: int | None = None, **_):
    _noise_not_rate("mass", mask_prob)
    return MassCorruption(tokenizer.mask_id, _first_decoder_input(tokenizer, decoder_start),
                          **_noise_options("mass", noise))


def _first_decoder_input(tokenizer, decoder_start: int | None) -> int:
    """A converted BART's decoder_start_token_id (``ModelConfig.decoder_start_id``, given with --init), else [BOS]."""
    return tokenizer.bos_id if decoder_start is None else decoder_start


# Settings an objective's corruption takes from `--noise KEY=VALUE,...`.
OBJECTIVE_NOISE = {"bart": NOISE_OPTIONS, "mass": ("span",)}


def _noise_options(objective: str, noise: dict | None) -> dict:
    noise = dict(noise or {})
    unknown = sorted(set(noise) - set(OBJECTIVE_NOISE[objective]))
    if unknown:
        raise UserError(f"--noise: {objective} has no setting {', '.join(unknown)}; it takes "
                        f"{', '.join(OBJECTIVE_NOISE[objective])}.")
    return noise


def _noise_not_rate(objective: str, given: float | None) -> None:
    if given is not None:
        raise UserError(f"--mask-prob does not apply to --objective {objective}; set its noise with --noise "
                        f"({', '.join(OBJECTIVE_NOISE[objective])}), e.g. --noise mask=0.3.")


OBJECTIVES = {
    "mlm": ("encoder", MaskedLM, _mlm_corruption),
    "clm": ("decoder", CausalLM, _clm_corruption),
    "plm": ("encoder", PermutationLM, _plm_corruption),
    "mpnet": ("encoder", MPNet, _mpnet_corruption),
    "electra": ("encoder", Electra, _electra_corruption),
    "word2vec": ("embedding", SkipGram, _word2vec_corruption),
    "elmo": ("rnn", BidirectionalLM, _elmo_corruption),
    "bart": ("encoder_decoder", DenoisingLM, _bart_corruption),
    "mass": ("encoder_decoder", MassLM, _mass_corruption),
}

SUPERVISED = "supervised"


@dataclass(frozen=True)
class ImageObjective:
    families: tuple[str, ...]  # image backbone families it trains
    build: Callable  # (backbone, training ImageSet, **options) -> task module
    augment: str  # the augmentation recipe it trains with unless told otherwise (data.augment.AUGMENTATIONS)
    needs_labels: bool
    # Settings it takes (PretrainConfig fields; None there means the module's default). A self-supervised module
    # also says how many augmented views a batch needs (``views``), its corruption, its smallest sensible batch
    # (``min_batch``) and the callbacks that update its extra state.
    options: tuple[str, ...] = ()
    module: type | None = None  # the module class config.json's task entry rebuilds (self-supervised objectives)


def _supervised(backbone, data, **_):
    return SequenceClassifier(backbone, data.num_labels, label_names=data.label_names, kind=SUPERVISED)


def _self_supervised(cls):
    def build(backbone, data, **options):
        return cls(backbone, **{k: v for k, v in options.items() if v is not None})
    return build


IMAGE_OBJECTIVES = {
    # ImageNet-style supervised pretraining on a big labeled source, then transfer (Yosinski et al. 2014; here
    # MNIST stands in for ImageNet). Its classifier head is dropped at transfer like any pretraining head.
    SUPERVISED: ImageObjective(("resnet", "vit"), _supervised, augment="xray", needs_labels=True),
    # Self-supervised: labels, when the data has them, are ignored by the objective (the pretraining monitor's kNN
    # uses them). Every pretraining-only part (projector, predictor, target network, decoder) sits under heads.
    "simclr": ImageObjective(("resnet", "vit"), _self_supervised(SimCLR), augment="simclr", needs_labels=False,
                             options=("temperature",), module=SimCLR),
    "byol": ImageObjective(("resnet", "vit"), _self_supervised(BYOL), augment="byol", needs_labels=False,
                           options=("momentum",), module=BYOL),
    "mae": ImageObjective(("vit",), _self_supervised(MaskedAutoencoder), augment="mae", needs_labels=False,
                          options=("mask_ratio", "decoder_layers"), module=MaskedAutoencoder),
}
SELF_SUPERVISED = tuple(name for name, o in IMAGE_OBJECTIVES.items() if o.module is not None)


@dataclass(frozen=True)
class AudioObjective:
    causal: bool  # whether the audio transformer it trains attends to the past only
    module: Callable  # (backbone, **task settings) -> task module
    corruption: Callable  # (mask_prob, noise dict) -> corruption run by the batch source
    noise: tuple[str, ...]  # the settings it takes from --noise


def _masked_frames(mask_prob: float | None, noise: dict) -> SpanMasking:
    return SpanMasking(_rate(mask_prob, MASK_PROB), int(noise.get("span", SPAN)))


def _apc_corruption(mask_prob: float | None, noise: dict) -> Unchanged:
    _no_rate("apc", mask_prob)
    return Unchanged()


AUDIO_OBJECTIVES = {
    "masked-frames": AudioObjective(False, MaskedFrames, _masked_frames, ("span",)),
    "apc": AudioObjective(True, APC, _apc_corruption, ("shift",)),
}


def audio_objective_settings(name: str, noise: dict | None) -> dict:
    """--noise of an audio objective, checked: {setting: whole number}."""
    noise = dict(noise or {})
    allowed = AUDIO_OBJECTIVES[name].noise
    unknown = sorted(set(noise) - set(allowed))
    if unknown:
        raise UserError(f"--noise: {name} has no setting {', '.join(unknown)}; it takes {', '.join(allowed)} "
                        f"(positions of 40 ms), e.g. --noise {allowed[0]}=2.")
    bad = [k for k, v in noise.items() if v != int(v) or v < 1]
    if bad:
        raise UserError(f"--noise {bad[0]}={noise[bad[0]]} must be a whole number of positions, at least 1.")
    return {k: int(v) for k, v in noise.items()}


def objective_modality(name: str) -> str:
    """"text", "image" or "audio" for a known objective; a UserError listing them all otherwise."""
    if name in OBJECTIVES:
        return "text"
    if name in IMAGE_OBJECTIVES:
        return "image"
    if name in AUDIO_OBJECTIVES:
        return "audio"
    raise UserError(f"unknown --objective '{name}'; choose one of "
                    f"{', '.join([*OBJECTIVES, *IMAGE_OBJECTIVES, *AUDIO_OBJECTIVES])} (text: {', '.join(OBJECTIVES)}; "
                    f"images: {', '.join(IMAGE_OBJECTIVES)}; audio: {', '.join(AUDIO_OBJECTIVES)}).")


__all__ = ["OBJECTIVES", "IMAGE_OBJECTIVES", "ImageObjective", "SUPERVISED", "SELF_SUPERVISED", "SimCLR", "BYOL",
           "MaskedAutoencoder", "PatchMasking", "nt_xent", "byol_momentum", "objective_modality", "TASKS",
           "SequenceClassifier", "MaskedLM", "CausalLM", "MLMCorruption", "CLMCorruption", "mask_tokens", "PermutationLM",
           "PLMCorruption", "MPNet", "MPNetCorruption", "Electra", "ElectraCorruption", "SkipGram",
           "SkipGramCorruption", "BidirectionalLM", "OBJECTIVE_NOISE", "DenoisingLM", "MassLM", "Seq2SeqLM",
           "BartCorruption", "MassCorruption", "AUDIO_OBJECTIVES", "AudioObjective", "audio_objective_settings",
           "MaskedFrames", "APC", "SpanMasking"]
