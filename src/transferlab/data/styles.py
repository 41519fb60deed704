"""Stroke styles: the same images redrawn thin, thick or inverted, made from the pixels themselves.

The vision bias probe (``experiments/vision_bias.py``) needs sub-groups that differ only in how the strokes look, not
in what is drawn, so that a source skewed towards one style can be measured against a balanced one on the same
digits. Each style is one grey-scale morphology op over a whole batch (no Python per pixel or per image):

- ``"thick"``: dilation with a 3x3 window (``max_pool2d(x, 3, 1, 1)``): every stroke grows a pixel on each side.
- ``"thin"``: erosion with a 2x2 window (the minimum over a pixel and its right, lower and lower-right
  neighbours): strokes lose one pixel, on one side. The symmetric 3x3 erosion (``-max_pool2d(-x, 3, 1, 1)``) is
  the obvious twin of "thick", but MNIST's strokes are only 2-3 pixels wide and it erased them: on the 10,000
  MNIST test digits 49% kept fewer than 10 pixels above half intensity, against 1.9% with the 2x2 window.
  Mean ink per digit (sum of intensities in [0, 1]) on those digits: plain 103.9, thin 55.2, thick 204.9, so the
  two styles differ almost four-fold in ink while nearly every digit stays readable (see the probe's PNG).
- ``"inverted"``: ``255 - x``, dark strokes on a light ground: a much stronger change of appearance than stroke
  width, for when the width contrast is learned too easily to show a bias.
- ``"plain"``: the images as they are.

The morphology assumes bright strokes on a dark ground, as MNIST has; on dark-on-light images "thin" and "thick"
swap meanings. Styles work per channel, so RGB images are restyled channel by channel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from .images import ImageSet

STYLES = ("plain", "thin", "thick", "inverted")
CHUNK = 8192  # images restyled per tensor op: bounds the float copy (8192 x 28 x 28 x 4 bytes = 26 MB)


def check_style(name: str, option: str = "--styles") -> str:
    """``name`` if it is a known style, else a ``UserError`` naming ``option`` and the choices."""
    if name not in STYLES:
        raise UserError(f"{option}: unknown style '{name}'; choose among {', '.join(STYLES)} (thin and thick are "
                        f"stroke widths, inverted swaps ink and ground).")
    return name


def apply_style(pixels, style: str):
    """Restyle a batch.

    Args:
        pixels: uint8 tensor (B, C, H, W).
        style: one of ``STYLES``.
    Returns:
        a uint8 tensor of the same shape.
    """
    import torch
    import torch.nn.functional as F

    check_style(style)
    if style == "plain":
        return pixels
    if style == "inverted":
        return 255 - pixels
    x = pixels.float()
    if style == "thick":
        out = F.max_pool2d(x, 3, 1, 1)
    else:
        # The window is the pixel and its right/lower neighbours; padding with 255 (neutral for a minimum) keeps
        # the image border from eroding strokes that touch it.
        padded = F.pad(x, (0, 1, 0, 1), value=255.0)  # (B, C, H + 1, W + 1)
        out = -F.max_pool2d(-padded, 2, 1)  # (B, C, H, W)
    return out.round().clamp(0, 255).to(torch.uint8)


def restyle(data: ImageSet, styles: str | Sequence[str] | np.ndarray, chunk: int = CHUNK) -> ImageSet:
    """A copy of ``data`` with each image redrawn in its style; labels, names and positions unchanged.

    Args:
        data: an ``ImageSet``.
        styles: one style for every image, or one per image (a sequence or array of style names, length N).
        chunk: images per tensor op.
    Returns:
        a new in-memory ``ImageSet`` (the source's memory map, if any, is not written to).
    """
    import torch

    n = len(data)
    per_image = np.full(n, styles, dtype=object) if isinstance(styles, str) else np.asarray(styles, dtype=object)
    if per_image.shape != (n,):
        raise UserError(f"{data.source}: {per_image.size} styles for {n} images; give one style, or one per image.")
    out = np.array(data.images, copy=True)  # (N, H, W, C) uint8
    for style in sorted(set(per_image.tolist())):
        check_style(style)
        if style == "plain":
            continue
        idx = np.flatnonzero(per_image == style)
        for start in range(0, len(idx), chunk):
            rows = idx[start:start + chunk]
            x = torch.from_numpy(np.ascontiguousarray(out[rows])).permute(0, 3, 1, 2)  # (B, C, H, W)
            out[rows] = apply_style(x, style).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return ImageSet(out, None if data.labels is None else np.array(data.labels), data.label_names, data.source,
                    list(data.names), data.task, list(data.skipped),
                    None if data.positions is None else np.array(data.positions))


def assign_styles(n: int, share_a: float, styles: tuple[str, str], seed: int | Sequence[int]) -> np.ndarray:
    """Draw a style per image: ``styles[0]`` with probability ``share_a``, else ``styles[1]``.

    One uniform number per image is drawn from ``seed`` and compared with ``share_a``, so calls with the same seed
    and different shares are nested: every image that is style A at share 0.5 is style A at share 0.95 too. A
    skewed and a balanced source made this way differ in as few images as possible.

    Args:
        n: number of images.
        share_a: probability of the first style, in [0, 1].
        styles: (style A, style B).
        seed: the draw's seed: an int, or a sequence of ints (a seed and a stream number).
    Returns:
        an (n,) array of style names.
    """
    if not 0.0 <= share_a <= 1.0:
        raise UserError(f"the share of style {styles[0]} must be in [0, 1], got {share_a}.")
    for s in styles:
        check_style(s)
    u = np.random.default_rng([seed, 7]).random(n)  # 7 tags this draw: other uses of the seed draw other numbers
    return np.where(u < share_a, styles[0], styles[1]).astype(object)


def ink(images: np.ndarray) -> np.ndarray:
    """Mean intensity of each image in [0, 1] ((N, H, W, C) uint8 in, (N,) float out): how much stroke it has."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1).mean(axis=1) / 255.0
