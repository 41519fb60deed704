"""Train, load and save subword tokenizers with transferlab's fixed special-token ids."""

from .tokenizer import KINDS, ROLES, SPECIAL_TOKENS, TOKENIZER_FILE, Tokenizer

__all__ = ["KINDS", "ROLES", "SPECIAL_TOKENS", "TOKENIZER_FILE", "Tokenizer"]
