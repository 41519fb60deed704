"""Pretraining objectives: each is a corruption (pure data, seeded) plus a task module.

OBJECTIVES maps the name used on the command line to (backbone family, module class, corruption factory).
"""

from ..errors import UserError
from .clm import CausalLM, CLMCorruption
from .denoising import NOISE_OPTIONS, BartCorruption, DenoisingLM, sentence_end_ids
from .mass import MassCorruption, MassLM
from .mlm import MaskedLM, MLMCorruption, mask_tokens
from .seq2seq_lm import Seq2SeqLM


def _mlm_corruption(tokenizer, mask_prob: float = 0.15, **_):
    return MLMCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, mask_prob)


def _clm_corruption(tokenizer, **_):
    return CLMCorruption()


def _bart_corruption(tokenizer, seq_len: int = 512, noise: dict | None = None, **_):
    return BartCorruption(tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id,
                          tuple(sentence_end_ids(tokenizer)), max_len=seq_len, pad_id=tokenizer.pad_id,
                          **_noise_options("bart", noise))


def _mass_corruption(tokenizer, noise: dict | None = None, **_):
    return MassCorruption(tokenizer.mask_id, tokenizer.bos_id, **_noise_options("mass", noise))


# Settings an objective's corruption takes from `--noise KEY=VALUE,...`.
OBJECTIVE_NOISE = {"bart": NOISE_OPTIONS, "mass": ("span",)}


def _noise_options(objective: str, noise: dict | None) -> dict:
    noise = dict(noise or {})
    unknown = sorted(set(noise) - set(OBJECTIVE_NOISE[objective]))
    if unknown:
        raise UserError(f"--noise: {objective} has no setting {', '.join(unknown)}; it takes "
                        f"{', '.join(OBJECTIVE_NOISE[objective])}.")
    return noise


OBJECTIVES = {
    "mlm": ("encoder", MaskedLM, _mlm_corruption),
    "clm": ("decoder", CausalLM, _clm_corruption),
    "bart": ("encoder_decoder", DenoisingLM, _bart_corruption),
    "mass": ("encoder_decoder", MassLM, _mass_corruption),
}

__all__ = ["OBJECTIVES", "MaskedLM", "CausalLM", "MLMCorruption", "CLMCorruption", "mask_tokens"]
__all__ += ["OBJECTIVE_NOISE", "DenoisingLM", "MassLM", "Seq2SeqLM", "BartCorruption", "MassCorruption"]
