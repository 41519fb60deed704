"""Fine-tuning tasks."""

from .classification import TASKS, SequenceClassifier

__all__ = ["TASKS", "SequenceClassifier"]
