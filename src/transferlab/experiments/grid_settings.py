"""The training settings of one cell of a comparison grid (``compare``, and ``protocols``, which builds a compare
grid from its command line): fine-tuning's settings with a grid's defaults, declared once.

Kept apart from ``compare.py`` (which imports torch) so that the command line can be built from them quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from ..recipes.settings import POOLINGS
from ..training.settings import FinetuneSettings


@dataclass
class GridSettings(FinetuneSettings, defaults={"lr": 5e-5}):  # a grid's runs keep BERT's fixed rate
    """The training settings of one grid cell: the spec's `train:` keys (and a method's own), declared and validated
    with the other training settings.

    100 labels at batch 32 for 3 epochs are 12 optimizer steps, too few to learn anything, and 67k labels for 3
    epochs take hours on a CPU: a fixed epoch count would measure under- or over-training rather than the value of
    labels, hence ``min_epoch_size`` and ``max_steps``."""

    min_epoch_size: int = option(0, "an epoch of a smaller budget repeats its examples (reshuffled) until it holds "
                                    "at least this many (0: off)", unit="examples", at_least=0)
    max_steps: int = option(0, "a cap on optimizer steps per run: large budgets then train for fewer, possibly "
                               "fractional, epochs (0: no cap)", unit="steps", at_least=0)
    max_len: int = option(128, "longest token sequence", unit="tokens", at_least=2)
    pooling: str | None = option(None, "how the head reads the sequence", choices=POOLINGS,
                                 default_text="the model's own")
    augment: str | None = option(None, "images: an augmentation recipe (none, light, xray) with KEY=VALUE overrides")
    eval_every_epochs: int = option(1, "evaluate on dev every N epochs (the last epoch always is)", unit="epochs",
                                    at_least=1)


GridSettings.section = "a comparison grid's training settings (compare's `train:` keys)"


# Images: a network trained from scratch (or a whole transferred ResNet) wants AdamW's usual 1e-3, not BERT's
# fine-tuning rate, and more epochs; augmentation is off unless the spec names a recipe (data.augment).
@dataclass
class ImageGridSettings(GridSettings, defaults={"epochs": 10, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.05,
                                                "augment": "none"}):
    """The training settings of one image grid cell."""


# The settings `transferlab protocols` takes for its trained protocols, written into its grid's `train:`. Left out,
# they are the grid's defaults for the checkpoint's modality, which the command line cannot know in advance.
PROTOCOL_KEYS = ("epochs", "lr", "batch_size", "augment")


@dataclass
class ProtocolSettings(GridSettings, described={"epochs": "3 for text, 10 for images, 20 for audio",
                                                "lr": "5e-5 for text, 1e-3 for images and audio",
                                                "batch_size": "32, 64 for images", "augment": "none"}):
    """The training settings of `transferlab protocols`' trained protocols (linear-probe, finetune, scratch)."""
