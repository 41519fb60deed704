"""Fine-tuning tasks."""

from ..objectives.classification import TASKS, SequenceClassifier

__all__ = ["TASKS", "SequenceClassifier"]
