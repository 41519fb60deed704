"""Heads sit on a backbone's hidden states. Pretraining heads are thrown away at transfer; task heads are new."""

from .heads import ClassificationHead, LMHead, pool

__all__ = ["ClassificationHead", "LMHead", "pool"]
