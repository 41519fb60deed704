"""What every trainable task has in common: a backbone, named heads, ``forward(batch) -> dict`` with ``loss``.

The state-dict layout (``backbone.*``, ``heads.<name>.*``) is the checkpoint contract: transfer keeps
``backbone.*`` and replaces the heads.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError


class TaskModule(nn.Module):
    kind: str = ""  # the name stored in config.json ("mlm", "clm", "classification", ...)
    # Which output is a mean token cross-entropy, so that exp() of it is a perplexity; None when none is (word2vec's
    # negative-sampling loss). ELECTRA's total loss mixes its generator's cross-entropy with 50 x a binary one.
    perplexity_of: str | None = "loss"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict()

    @property
    def config(self):
        return self.backbone.config

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that a BatchNorm whose weights are frozen stays in eval mode: a linear probe
        (or a group gradual unfreezing has not reached yet) must not retune the backbone through its running
        statistics, which a train-mode BatchNorm updates on every batch."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    @property
    def unit(self) -> str:
        """What ``count`` counts (tokens, images, frames): the training loop logs throughput in it."""
        return self.backbone.unit

    def count(self, batch: dict) -> int:
        """How many units of input this batch feeds the model (for throughput; the loop never reads the batch)."""
        return self.backbone.count(batch)

    # Heads a module takes over from the checkpoint it is transferred from, when names and shapes match; every
    # other head is dropped and made fresh. Empty for classifiers (a new label set needs a new head).
    carried_heads: tuple[str, ...] = ()

    def task_config(self) -> dict:
        """What config.json needs, besides the backbone config, to rebuild this module."""
        return {"kind": self.kind}

    def callbacks(self) -> list:
        """Training-loop callbacks that update state this module keeps besides what the optimizer trains (BYOL's
        moving-average target); the loop runs them. None for most modules."""
        return []


def require_family(backbone: nn.Module, objective: str, families: tuple[str, ...]) -> None:
    """Refuse a backbone an objective cannot train (e.g. permutation LM on a causal decoder)."""
    family = backbone.config.family
    if family not in families:
        raise UserError(f"objective '{objective}' needs a backbone of family {' or '.join(families)}, got family "
                        f"'{family}'; build it with models.preset(name, '{families[0]}', vocab_size) (the CLI's "
                        f"`pretrain --objective {objective}` does this for you).")


def check_rate(option: str, value: float, high: float = 1.0) -> None:
    """A rate option must lie in (0, high); ``high`` is inclusive when below 1 (a stated structural limit)."""
    if not (0.0 < value < 1.0 and value <= high):
        limit = f"(0, {high}]" if high < 1.0 else "(0, 1)"
        raise UserError(f"{option} must be in {limit}, got {value}.")
