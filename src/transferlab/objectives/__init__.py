"""Pretraining objectives: each is a corruption (pure data, seeded) plus a task module.

OBJECTIVES maps the name used on the command line to (backbone family, module class, corruption factory).
"""

from ..errors import UserError
from .clm import CausalLM, CLMCorruption
from .electra import Electra, ElectraCorruption
from .elmo import BidirectionalLM
from .mlm import MaskedLM, MLMCorruption, mask_tokens
from .mpnet import MPNet, MPNetCorruption
from .plm import PREDICT_RATIO, PermutationLM, PLMCorruption
from .word2vec import SkipGram, SkipGramCorruption


def _rate(given: float | None, default: float) -> float:
    """--mask-prob left unset means the objective's own published rate."""
    return default if given is None else given


def _mlm_corruption(tokenizer, mask_prob: float | None = None, **_):
    return MLMCorruption(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.cls_id, _rate(mask_prob, 0.15))


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


OBJECTIVES = {
    "mlm": ("encoder", MaskedLM, _mlm_corruption),
    "clm": ("decoder", CausalLM, _clm_corruption),
    "plm": ("encoder", PermutationLM, _plm_corruption),
    "mpnet": ("encoder", MPNet, _mpnet_corruption),
    "electra": ("encoder", Electra, _electra_corruption),
    "word2vec": ("embedding", SkipGram, _word2vec_corruption),
    "elmo": ("rnn", BidirectionalLM, _elmo_corruption),
}

__all__ = ["OBJECTIVES", "MaskedLM", "CausalLM", "MLMCorruption", "CLMCorruption", "mask_tokens", "PermutationLM",
           "PLMCorruption", "MPNet", "MPNetCorruption", "Electra", "ElectraCorruption", "SkipGram",
           "SkipGramCorruption", "BidirectionalLM"]
