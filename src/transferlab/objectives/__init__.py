"""Pretraining objectives: each is a corruption (pure data, seeded) plus a task module.

OBJECTIVES maps the name used on the command line to (backbone family, module class, corruption factory).
"""

from .clm import CausalLM, CLMCorruption
from .electra import Electra, ElectraCorruption
from .mlm import MaskedLM, MLMCorruption, mask_tokens
from .mpnet import MPNet, MPNetCorruption
from .plm import PREDICT_RATIO, PermutationLM, PLMCorruption


def _rate(given: float | None, default: float) -> float:
    """--mask-prob left unset means the objective's own published rate."""
    return default if given is None else given


def _mlm_corruption(tokenizer, mask_prob: float | None = None, **_):
    return MLMCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


def _clm_corruption(tokenizer, **_):
    return CLMCorruption()


def _plm_corruption(tokenizer, mask_prob: float | None = None, **_):
    return PLMCorruption(tokenizer.cls_id, _rate(mask_prob, PREDICT_RATIO))


def _mpnet_corruption(tokenizer, mask_prob: float | None = None, **_):
    return MPNetCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


def _electra_corruption(tokenizer, mask_prob: float | None = None, **_):
    return ElectraCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


OBJECTIVES = {
    "mlm": ("encoder", MaskedLM, _mlm_corruption),
    "clm": ("decoder", CausalLM, _clm_corruption),
    "plm": ("encoder", PermutationLM, _plm_corruption),
    "mpnet": ("encoder", MPNet, _mpnet_corruption),
    "electra": ("encoder", Electra, _electra_corruption),
}

__all__ = ["OBJECTIVES", "MaskedLM", "CausalLM", "MLMCorruption", "CLMCorruption", "mask_tokens", "PermutationLM",
           "PLMCorruption", "MPNet", "MPNetCorruption", "Electra", "ElectraCorruption"]
