"""Pretraining objectives: each is a corruption (pure data, seeded) plus a task module.

OBJECTIVES maps the name used on the command line to (backbone family, module class, corruption factory).
"""

from .clm import CausalLM, CLMCorruption
from .mlm import MaskedLM, MLMCorruption, mask_tokens


def _mlm_corruption(tokenizer, mask_prob: float = 0.15, **_):
    return MLMCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, mask_prob,
                         tuple(tokenizer.special_ids))


def _clm_corruption(tokenizer, **_):
    return CLMCorruption()


OBJECTIVES = {
    "mlm": ("encoder", MaskedLM, _mlm_corruption),
    "clm": ("decoder", CausalLM, _clm_corruption),
}

__all__ = ["OBJECTIVES", "MaskedLM", "CausalLM", "MLMCorruption", "CLMCorruption", "mask_tokens"]
