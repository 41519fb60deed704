"""The text preprocessor's old import path: the tokenizer lives in ``inputs/text.py`` beside the other modalities'
preprocessors. Kept because users' scripts import ``transferlab.tokenization.Tokenizer``."""

from ..inputs.text import KINDS, ROLES, SPECIAL_TOKENS, TOKENIZER_FILE, Tokenizer

__all__ = ["KINDS", "ROLES", "SPECIAL_TOKENS", "TOKENIZER_FILE", "Tokenizer"]
