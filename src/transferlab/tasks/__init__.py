"""Fine-tuning tasks."""

from .classification import TASKS, SequenceClassifier, encode_texts

__all__ = ["TASKS", "SequenceClassifier", "encode_texts"]
