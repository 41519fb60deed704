"""The audio preprocessor: the mel settings and the normalisation a model's audio is prepared with.

Recorded in a checkpoint's ``config.json`` beside the backbone, so a transferred model computes the features of its
new recordings exactly as its pretraining recordings were computed (sample rate, window, hop, mel bins) and
normalises them by the pretraining corpus's per-bin mean and std (global CMVN). Features stay unnormalised float16
until a batch is made: normalising is one tensor op per batch.

Variable-length clips: a batch is padded on the right to its longest clip (rounded up to a multiple of 16 frames, so
oneDNN sees few distinct shapes and the 4x frame subsampler divides it), with an attention mask over the real
frames; padded frames are zeros after normalisation (the corpus mean). A clip longer than ``max_frames`` is cropped:
at a seeded random offset in training batches, around its centre when evaluating or predicting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.audio import MelSettings
from ..errors import UserError


@dataclass
class AudioInputs:
    settings: MelSettings
    mean: tuple[float, ...]  # per mel bin, in log-mel units
    std: tuple[float, ...]
    max_frames: int = 3000  # 30 s at a 10 ms hop (Whisper's window); longer clips are cropped

    modality = "audio"
    unit = "frames"

    def __post_init__(self):
        if isinstance(self.settings, dict):
            self.settings = MelSettings.from_dict(self.settings)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        n = self.settings.n_mels
        if len(self.mean) != n or len(self.std) != n:
            raise UserError(f"audio normalisation needs one mean and one std per mel bin: {n} bins, got "
                            f"{len(self.mean)} means and {len(self.std)} stds.")
        if not all(math.isfinite(s) and s > 0 for s in self.std) or not all(math.isfinite(m) for m in self.mean):
            raise UserError("audio normalisation std must be positive and finite; a corpus of one constant sound has "
                            "no spread to normalise by.")
        if not (isinstance(self.max_frames, int) and self.max_frames >= 16):
            raise UserError(f"max_frames={self.max_frames!r} must be a whole number of at least 16 frames.")

    @classmethod
    def fit(cls, data, max_frames: int = 3000) -> "AudioInputs":
        """The settings of an audio set with the per-bin mean and std of its frames: what pretraining records."""
        from ..data.audio import feature_stats

        mean, std = feature_stats(data)
        return cls(data.settings, tuple(mean.round(5)), tuple(np.maximum(std, 1e-3).round(5)), max_frames)

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    # ------------------------------------------------------------------ the preprocessor contract (inputs/)
    def record(self) -> dict:
        return {"inputs": {"modality": "audio", "settings": self.settings.to_dict(), "mean": list(self.mean),
                           "std": list(self.std), "max_frames": self.max_frames}}

    def save(self, directory: str | Path) -> None:
        """Nothing besides config.json: the record holds everything."""

    @classmethod
    def from_checkpoint(cls, directory: str | Path, config: dict) -> "AudioInputs":
        record = {k: v for k, v in config["inputs"].items() if k != "modality"}
        try:
            return cls(**record)
        except (TypeError, AttributeError) as e:
            raise UserError(f"'{Path(directory) / 'config.json'}': the audio inputs record is malformed ({e}); "
                            f"expected settings, mean, std and max_frames.") from None

    def check_fits(self, backbone: dict, where: str) -> None:
        """Refuse a backbone config (dict) made for another number of mel bins."""
        n_mels = backbone.get("n_mels")
        if n_mels is not None and n_mels != self.settings.n_mels:
            raise UserError(f"'{where}': the model reads {n_mels} mel bins but its inputs record says "
                            f"{self.settings.n_mels}; the directory mixes files from different runs.")

    def check_data(self, data):
        """``data`` (an ``AudioSet``) if its features were computed with these settings, else a UserError."""
        if data.settings != self.settings:
            mine, theirs = self.settings.to_dict(), data.settings.to_dict()
            differ = ", ".join(f"{k} {theirs[k]} (model: {mine[k]})" for k in mine if mine[k] != theirs[k])
            raise UserError(f"{data.source}: its features were computed with other mel settings ({differ}). Read "
                            f"the audio through the model (model.read(path), or labeled data passed as a path) so "
                            f"the model's settings apply.")
        return data

    def examples(self, data, backbone_config=None, max_len: int | None = None, augment=None):
        """An audio set as batchable examples (``max_len`` is for text: clips are cropped at ``max_frames``)."""
        from ..data.batches import AudioExamples

        self.check_data(data)
        labels = None if data.labels is None else np.asarray(data.labels, dtype=np.int64)
        return AudioExamples(data, labels, self.mean, self.std, self.max_frames)
