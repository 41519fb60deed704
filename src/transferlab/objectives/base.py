"""What every trainable task has in common: a backbone, named heads, ``forward(batch) -> dict`` with ``loss``.

The state-dict layout (``backbone.*``, ``heads.<name>.*``) is the checkpoint contract: transfer keeps
``backbone.*`` and replaces the heads.
"""

from __future__ import annotations

from torch import nn


class TaskModule(nn.Module):
    kind: str = ""  # the name stored in config.json ("mlm", "clm", "classification", ...)

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict()

    @property
    def config(self):
        return self.backbone.config

    def task_config(self) -> dict:
        """What config.json needs, besides the backbone config, to rebuild this module."""
        return {"kind": self.kind}
