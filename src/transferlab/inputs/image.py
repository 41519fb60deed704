"""The image preprocessor: the size, channels and normalisation a model's images are prepared with.

Recorded in a checkpoint's ``config.json`` (timm's ``pretrained_cfg`` idea), so a transferred model meets its
new data normalised as its pretraining data was. Pixels stay uint8 until a batch is made: normalising is one
tensor op per batch, after augmentation (which works on uint8 images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError


@dataclass
class ImageInputs:
    size: tuple[int, int]  # (H, W)
    channels: int
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]

    modality = "image"
    unit = "images"

    def __post_init__(self):
        self.size = tuple(int(s) for s in self.size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.size) != 2 or min(self.size) < 1:
            raise UserError(f"image size must be two positive numbers (height, width), got {self.size}.")
        if self.channels < 1 or len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(f"image normalisation needs one mean and one std per channel: {self.channels} "
                            f"channel(s), mean {self.mean}, std {self.std}.")
        if not all(math.isfinite(s) and s > 0 for s in self.std) or not all(math.isfinite(m) for m in self.mean):
            raise UserError(f"image normalisation std must be positive and finite (got mean {self.mean}, std "
                            f"{self.std}); an image set of one constant colour has no spread to normalise by.")

    @classmethod
    def fit(cls, data, max_images: int = 20000) -> "ImageInputs":
        """Size and channels of an image set, with the per-channel mean and std of (up to ``max_images`` of) its
        pixels: what pretraining records, as ImageNet's mean/std were measured on ImageNet."""
        images = data.images
        step = max(1, len(images) // max_images)
        sample = np.asarray(images[::step], dtype=np.float64) / 255.0  # (n, H, W, C)
        mean = sample.mean(axis=(0, 1, 2))
        std = sample.std(axis=(0, 1, 2))
        return cls(tuple(images.shape[1:3]), images.shape[3], tuple(mean.round(6)), tuple(np.maximum(std, 1e-3).round(6)))

    # ------------------------------------------------------------------ the preprocessor contract (inputs/)
    def record(self) -> dict:
        return {"inputs": {"modality": "image", "size": list(self.size), "channels": self.channels,
                           "mean": list(self.mean), "std": list(self.std)}}

    def save(self, directory: str | Path) -> None:
        """Nothing besides config.json: the record holds everything."""

    @classmethod
    def from_checkpoint(cls, directory: str | Path, config: dict) -> "ImageInputs":
        record = {k: v for k, v in config["inputs"].items() if k != "modality"}
        try:
            return cls(**record)
        except TypeError as e:
            raise UserError(f"'{Path(directory) / 'config.json'}': the image inputs record is malformed ({e}); "
                            f"expected size, channels, mean and std.") from None

    def check_fits(self, backbone: dict, where: str) -> None:
        """Refuse a backbone config (dict) made for other channels, or (ViT) another image size."""
        channels = backbone.get("in_channels")
        if channels is not None and channels != self.channels:
            raise UserError(f"'{where}': the model reads {channels}-channel images but its inputs record says "
                            f"{self.channels}; the directory mixes files from different runs.")
        size = backbone.get("image_size")
        if size is not None and tuple(size) != self.size:
            raise UserError(f"'{where}': the model was built for {tuple(size)} images but its inputs record says "
                            f"{self.size}; the directory mixes files from different runs.")

    def adapted(self, channels: int | None = None, size: tuple[int, int] | None = None) -> "ImageInputs":
        """The preprocessor of a model adapted to ``channels`` / ``size`` (``from_pretrained(channels=...)``): a
        grayscale model made from an RGB one normalises by the mean of the channels' statistics (its filters are
        the RGB filters summed), an RGB one made from a grayscale one repeats the single channel's."""
        mean, std, c = self.mean, self.std, self.channels
        if channels is not None and channels != c:
            mean = (float(np.mean(mean)),) * channels
            std = (float(np.mean(std)),) * channels
            c = channels
        return ImageInputs(tuple(size) if size is not None else self.size, c, mean, std)

    def check_data(self, data):
        """``data`` (an ``ImageSet``) if its images have this preprocessor's size and channels, else a UserError
        with the fix."""
        if data.channels != self.channels:
            raise UserError(f"{data.source}: the images have {data.channels} channel(s) but the model reads "
                            f"{self.channels}. Adapt the checkpoint to your data with from_pretrained(..., "
                            f"channels={data.channels}) (the CLI does this for you), or convert the images.")
        if tuple(data.size) != self.size:
            raise UserError(f"{data.source}: the images are {data.size[0]}x{data.size[1]} but the model reads "
                            f"{self.size[0]}x{self.size[1]}. Resize them when reading (--image-size "
                            f"{self.size[0]},{self.size[1]}; read_images(..., resize=...)), or adapt a ViT "
                            f"checkpoint with from_pretrained(..., image_size=...).")
        return data

    def examples(self, data, backbone_config=None, max_len: int | None = None, augment=None):
        """An image set as batchable examples: uint8 pixels kept as they are, augmented (training only) and
        normalised per batch."""
        from ..data.batches import ImageExamples

        self.check_data(data)
        labels = None if data.labels is None else np.asarray(data.labels, dtype=np.int64)
        return ImageExamples(data.images, labels, self.mean, self.std, augment)
