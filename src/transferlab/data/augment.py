"""Seeded, per-sample image augmentation on uint8 batches, built on ``torchvision.transforms.v2``.

Supervised training on small image sets (28x28 chest X-rays, MNIST digits) needs mild geometric noise: a random
resized crop, a small rotation and shift. Flips are off by default because left and right carry meaning on a
chest X-ray (the heart sits on the left). There is no hue or saturation jitter: the target images are grayscale.

An augmentation is a settings dataclass (``AugmentConfig``), named recipes as plain data (``AUGMENTATIONS``), and
one callable (``Augment``) that maps a uint8 batch (B, C, H, W) and a seed to an augmented uint8 batch of the same
shape. The output depends on the seed alone, never on the global torch RNG, so a data loader worker, a resumed
run and a test all see the same images for the same (seed, batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import UserError

BLUR_KERNEL = 3  # pixels; a 28x28 image loses its structure under anything wider
BLUR_SIGMA = (0.1, 1.0)  # drawn per image, uniformly
CROP_ATTEMPTS = 10  # as v2.RandomResizedCrop: tries before falling back to a centre crop


@dataclass
class AugmentConfig:
    """What one augmentation does; every setting at its "off" value turns that step off.

    Steps run in this order: random resized crop (back to the input size), rotation and shift (one affine warp),
    brightness, contrast, Gaussian blur, flips, additive noise.
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)  # area kept by the crop, as a fraction; (1, 1) = off
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop
    rotation: float = 10.0  # degrees, drawn uniformly in [-rotation, rotation]
    translate: float = 0.0  # largest shift as a fraction of width / height (whole pixels, as v2.RandomAffine)
    hflip: bool = False  # off by default: left and right matter on chest X-rays
    vflip: bool = False
    brightness: float = 0.0  # factor drawn uniformly in [1 - brightness, 1 + brightness]
    contrast: float = 0.0  # likewise
    blur: float = 0.0  # probability of a small Gaussian blur (3x3 kernel, sigma in BLUR_SIGMA)
    noise: float = 0.0  # std of additive Gaussian noise, in [0, 1] pixel units (1 = the full 0..255 range)

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name)))
        lo, hi = self.crop_scale
        _check("crop_scale", self.crop_scale, 0 < lo <= hi <= 1,
               "a pair (lo, hi) with 0 < lo <= hi <= 1: the fraction of the image area a crop keeps ((1, 1) turns "
               "cropping off)")
        lo, hi = self.crop_ratio
        _check("crop_ratio", self.crop_ratio, 0 < lo <= hi,
               "a pair (lo, hi) with 0 < lo <= hi: the crop's width / height range, e.g. (0.75, 1.333)")
        _check("rotation", self.rotation, 0 <= self.rotation <= 180, "degrees in [0, 180] (0 turns rotation off)")
        _check("translate", self.translate, 0 <= self.translate <= 1,
               "a fraction of the image size in [0, 1] (0 turns shifting off)")
        for name in ("brightness", "contrast"):
            _check(name, getattr(self, name), 0 <= getattr(self, name) <= 1,
                   "a jitter factor in [0, 1]: the factor is drawn in [1 - x, 1 + x] (0 turns it off)")
        _check("blur", self.blur, 0 <= self.blur <= 1, "a probability in [0, 1] (0 turns blurring off)")
        _check("noise", self.noise, 0 <= self.noise <= 1,
               "a standard deviation in [0, 1] pixel units, e.g. 0.02 (0 turns noise off)")

    def to_dict(self) -> dict:
        """Plain data for run.json; ``AugmentConfig(**d)`` gives the same config back."""
        return asdict(self)

    @property
    def enabled(self) -> bool:
        """Whether any step changes an image."""
        return (self.crop_scale != (1.0, 1.0) or self.rotation > 0 or self.translate > 0 or self.hflip or self.vflip
                or self.brightness > 0 or self.contrast > 0 or self.blur > 0 or self.noise > 0)


_PAIRS = ("crop_scale", "crop_ratio")
_BOOLS = ("hflip", "vflip")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _check(name: str, value, ok: bool, valid: str) -> None:
    if not ok:
        raise UserError(f"augmentation setting {name}={value!r} is out of range: give {valid}.")


def _coerce(name: str, value):
    """Bring a setting from JSON / YAML / Python (lists, ints) to its declared type, or raise a UserError."""
    if name in _PAIRS:
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
            return float(value[0]), float(value[1])
        raise UserError(f"augmentation setting {name}={value!r} must be a pair of numbers (lo, hi), e.g. "
                        f"{name}=(0.8, 1.0) in Python or {name}=0.8:1.0 on the command line.")
    if name in _BOOLS:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise UserError(f"augmentation setting {name}={value!r} must be true or false (1 or 0 on the command "
                        f"line).")
    if _is_number(value):
        return float(value)
    raise UserError(f"augmentation setting {name}={value!r} must be a number.")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Recipes are complete settings, not overrides of the dataclass defaults, so changing a default never changes
# what a named recipe (recorded by name in a run) does.
AUGMENTATIONS: dict[str, dict] = {
    "none": {"crop_scale": (1.0, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotation": 0.0, "translate": 0.0,
             "hflip": False, "vflip": False, "brightness": 0.0, "contrast": 0.0, "blur": 0.0, "noise": 0.0},
    "light": {"crop_scale": (0.9, 1.0), "crop_ratio": (0.9, 1 / 0.9), "rotation": 5.0, "translate": 0.0,
              "hflip": False, "vflip": False, "brightness": 0.0, "contrast": 0.0, "blur": 0.0, "noise": 0.0},
    # The supervised default for 28x28 medical images: the crop and shift stand in for the patient's position in
    # the frame, the rotation for a tilted film; no flips (anatomy is not mirror-symmetric), no intensity jitter.
    "xray": {"crop_scale": (0.8, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotation": 10.0, "translate": 0.05,
             "hflip": False, "vflip": False, "brightness": 0.0, "contrast": 0.0, "blur": 0.0, "noise": 0.0},
    # Self-supervised recipes for 28x28 grayscale medical images (lightly's and solo-learn's per-method transforms,
    # without colour: the images are grayscale). Two views of one image must differ enough that matching them
    # takes knowing what is in the picture: SimCLR found the random crop the one augmentation that matters most
    # (Chen et al. 2020, figure 5), with colour distortion second, here intensity jitter (brightness, contrast),
    # blur and sensor noise. The crop goes down to 35% of the area rather than ImageNet's 8%: a 28x28 X-ray cropped
    # to 8% is a 8x8 patch of grey. Small rotations stand in for patient position; no flips (anatomy).
    "simclr": {"crop_scale": (0.35, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotation": 10.0, "translate": 0.0,
               "hflip": False, "vflip": False, "brightness": 0.4, "contrast": 0.4, "blur": 0.5, "noise": 0.02},
    # BYOL's views are SimCLR's (its paper's own set differs from SimCLR's mostly in solarisation, which has no
    # meaning for an X-ray, and in blurring one view more than the other).
    "byol": {"crop_scale": (0.35, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotation": 10.0, "translate": 0.0,
             "hflip": False, "vflip": False, "brightness": 0.4, "contrast": 0.4, "blur": 0.5, "noise": 0.02},
    # MAE needs no view-matching invariance (masking is its corruption): a mild crop only, as its paper's.
    "mae": {"crop_scale": (0.6, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotation": 0.0, "translate": 0.0,
            "hflip": False, "vflip": False, "brightness": 0.0, "contrast": 0.0, "blur": 0.0, "noise": 0.0},
}


def augment_config(spec) -> AugmentConfig:
    """An ``AugmentConfig`` from a recipe name, a dict, a command-line string, or a config (returned as is).

    Args:
        spec: ``"xray"``; ``"xray,rotation=5,hflip=1"`` (a recipe first, then KEY=VALUE overrides; a pair is
            written ``crop_scale=0.9:1``; with no recipe the overrides apply to the ``AugmentConfig`` defaults);
            ``{"recipe": "xray", "rotation": 5}`` or ``{"rotation": 5}``; ``None`` is ``"none"``.
    Returns:
        the validated config. An unknown recipe or key, or a bad value, is a ``UserError`` that lists the choices.
    """
    if spec is None:
        spec = "none"
    if isinstance(spec, AugmentConfig):
        return spec
    if isinstance(spec, str):
        return _from_string(spec)
    if isinstance(spec, dict):
        overrides = dict(spec)
        recipe = overrides.pop("recipe", None)
        return _build(recipe, overrides, where=f"the augmentation {spec!r}")
    raise UserError(f"augmentation {spec!r} is neither a recipe name, a 'recipe,KEY=VALUE,...' string nor a dict. "
                    f"Recipes: {', '.join(AUGMENTATIONS)}.")


def _from_string(text: str) -> AugmentConfig:
    where = f"augmentation '{text}'"
    items = [s.strip() for s in text.split(",") if s.strip()]
    recipe = items.pop(0) if items and "=" not in items[0] else None
    raw = {}
    for item in items:
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            raise UserError(f"{where}: '{item}' is not KEY=VALUE. Write the recipe first, then overrides, e.g. "
                            f"'xray,rotation=5,hflip=1'.")
        raw[key] = value
    _check_keys(raw, where)
    return _build(recipe, {k: _parse_value(k, v, where) for k, v in raw.items()}, where)


def _parse_value(key: str, raw: str, where: str):
    low = raw.lower()
    try:
        if key in _PAIRS:
            lo, hi = raw.split(":")
            return float(lo), float(hi)
        if key in _BOOLS:
            if low in _TRUE + _FALSE:
                return low in _TRUE
            raise ValueError
        return float(raw)
    except ValueError:
        form = ("LO:HI, e.g. 0.8:1" if key in _PAIRS else "1 or 0" if key in _BOOLS else "a number")
        raise UserError(f"{where}: {key}={raw} is not valid; write {key} as {form}.") from None


def _check_keys(overrides: dict, where: str) -> None:
    names = [f.name for f in fields(AugmentConfig)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise UserError(f"{where}: unknown augmentation setting(s) {', '.join(map(repr, unknown))}. Settings: "
                        f"{', '.join(names)}.")


def _build(recipe, overrides: dict, where: str) -> AugmentConfig:
    if recipe is not None and recipe not in AUGMENTATIONS:
        raise UserError(f"{where}: unknown augmentation recipe {recipe!r}. Recipes: {', '.join(AUGMENTATIONS)}.")
    _check_keys(overrides, where)
    base = dict(AUGMENTATIONS[recipe]) if recipe is not None else {}
    return AugmentConfig(**{**base, **overrides})


class Augment:
    """``augment(images, seed) -> images``: a seeded random augmentation of a uint8 batch (B, C, H, W), C in {1, 3}.

    Per-sample parameters. A v2 transform called on a batched tensor draws one set of parameters for the whole
    batch (checked: ``v2.RandomRotation(30)`` on a batch of two copies of one image returns two identical images),
    so every image of a batch would get the same crop and angle, and the batch would be no more varied than one
    image. Here each image gets its own parameters, drawn for the whole batch at once with the same distributions
    as ``v2.RandomResizedCrop`` / ``v2.RandomAffine`` / ``v2.ColorJitter`` / ``v2.GaussianBlur``, and applied per
    image with v2's tensor kernels (``v2.functional.resized_crop_image``, ``affine_image``, ...): exactly what the
    v2 kernel gives for those parameters (tests check it image by image). Flips and noise are batched. Pixels that
    a rotation or shift brings in from outside the image are black, blended bilinearly at the edge (the kernel's
    default, fill=None; ``v2.RandomAffine``'s fill=0 also multiplies each edge pixel by its inside fraction, darkening
    the border twice).

    Determinism. All randomness comes from a private ``torch.Generator`` seeded with ``seed``: the same seed gives
    the same output bit for bit, another seed another output, and the global torch RNG is neither read nor
    advanced (a forked RNG without the cost of saving and restoring the global state). The draws do not depend on
    which steps are on, so for one seed, turning on blur leaves every image's crop and angle as they were.

    Cost, one thread, a batch of 128 1x28x28 images, the "xray" recipe (crop + rotation + shift): ~17 ms with v2's
    per-image kernels and parameters drawn here, against ~36 ms for calling ``v2.Compose([RandomResizedCrop,
    RandomAffine])`` once per image under ``torch.random.fork_rng`` (at 28x28 the transform objects' parameter
    drawing and dispatch cost more than the warps). Every step on: ~30 ms; "none": no work. Best of 20 on a shared
    2-core machine, +-25% between runs; measured with ``OMP_NUM_THREADS=1 PYTHONPATH=src python -m
    transferlab.data.augment``. The remaining cost is one affine warp (~0.1 ms) and one crop resize (~0.05 ms) per
    image, mostly fixed overhead; v2 has no kernel that warps each image of a batch by its own matrix.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg if cfg is not None else AugmentConfig()

    def __repr__(self) -> str:
        return f"Augment({self.cfg})"

    def sample(self, shape, seed: int) -> dict:
        """Every image's parameters for a batch of ``shape`` (B, C, H, W), drawn from ``seed`` alone.

        Returns:
            a dict of per-image tensors: ``box`` (B, 4) int64 crop top, left, height, width; ``angle`` (B,)
            degrees; ``shift`` (B, 2) int64 whole pixels (x, y); ``brightness``, ``contrast``, ``sigma`` (B,)
            float64 factors; ``blur``, ``hflip``, ``vflip`` (B,) bool; ``noise`` (B, C, H, W) float32 in 0..255
            pixel units, or None when noise is off.
        """
        import torch

        cfg = self.cfg
        b, _, height, width = shape
        g = torch.Generator().manual_seed(int(seed))

        def uniform(lo: float, hi: float, *size):
            return lo + (hi - lo) * torch.rand(*size, generator=g, dtype=torch.float64)

        # Random resized crop, as v2.RandomResizedCrop: up to 10 tries of (area, log aspect) per image, the first
        # that fits wins; none fits -> a centre crop with the ratio clamped to the allowed range.
        area = height * width * uniform(*cfg.crop_scale, b, CROP_ATTEMPTS)
        aspect = torch.exp(uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), b, CROP_ATTEMPTS))
        w = torch.round(torch.sqrt(area * aspect)).long()  # (B, tries)
        h = torch.round(torch.sqrt(area / aspect)).long()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.long().argmax(1)  # (B,) the first try that fits (0 when none does; masked below)
        w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
        ok = fits.any(1)
        fw, fh = _centre_crop_size(height, width, cfg.crop_ratio)
        w, h = torch.where(ok, w, fw), torch.where(ok, h, fh)
        pos = torch.rand(b, 2, generator=g, dtype=torch.float64)
        top = torch.where(ok, (pos[:, 0] * (height - h + 1)).long(), (height - h) // 2)
        left = torch.where(ok, (pos[:, 1] * (width - w + 1)).long(), (width - w) // 2)

        angle = uniform(-cfg.rotation, cfg.rotation, b)
        # Whole-pixel shifts, as v2.RandomAffine draws them.
        max_shift = torch.tensor([cfg.translate * width, cfg.translate * height], dtype=torch.float64)
        shift = torch.round((2 * torch.rand(b, 2, generator=g, dtype=torch.float64) - 1) * max_shift).long()
        brightness = uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, b)
        contrast = uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, b)
        blur = torch.rand(b, generator=g) < cfg.blur
        sigma = uniform(*BLUR_SIGMA, b)
        hflip = torch.rand(b, generator=g) < (0.5 if cfg.hflip else 0.0)
        vflip = torch.rand(b, generator=g) < (0.5 if cfg.vflip else 0.0)
        # Drawn last, so the noise's many draws never shift the other parameters.
        noise = torch.randn(tuple(shape), generator=g) * (255 * cfg.noise) if cfg.noise > 0 else None
        return {"box": torch.stack([top, left, h, w], 1), "angle": angle, "shift": shift, "brightness": brightness,
                "contrast": contrast, "blur": blur, "sigma": sigma, "hflip": hflip, "vflip": vflip, "noise": noise}

    def apply(self, images, params: dict):
        """Augment ``images`` (B, C, H, W) uint8 with the per-image ``params`` of ``sample``; returns a new batch."""
        import torch

        from ..compat import import_torchvision

        import_torchvision()
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        cfg = self.cfg
        _, _, height, width = images.shape
        crop, warp = cfg.crop_scale != (1.0, 1.0), cfg.rotation > 0 or cfg.translate > 0
        box, angle, shift = params["box"].tolist(), params["angle"].tolist(), params["shift"].tolist()
        brightness, contrast = params["brightness"].tolist(), params["contrast"].tolist()
        blur, sigma = params["blur"].tolist(), params["sigma"].tolist()
        out = images.clone()
        if crop or warp or cfg.brightness > 0 or cfg.contrast > 0 or cfg.blur > 0:
            for i in range(len(images)):
                img = images[i]  # (C, H, W)
                if crop:
                    img = F.resized_crop_image(img, *box[i], size=[height, width],
                                               interpolation=InterpolationMode.BILINEAR, antialias=True)
                if warp:
                    img = F.affine_image(img, angle=angle[i], translate=shift[i], scale=1.0, shear=[0.0, 0.0],
                                         interpolation=InterpolationMode.BILINEAR)
                if cfg.brightness > 0:
                    img = F.adjust_brightness_image(img, brightness[i])
                if cfg.contrast > 0:
                    img = F.adjust_contrast_image(img, contrast[i])
                if blur[i]:
                    img = F.gaussian_blur_image(img, [BLUR_KERNEL, BLUR_KERNEL], [sigma[i], sigma[i]])
                out[i] = img
        if params["hflip"].any():
            out[params["hflip"]] = F.horizontal_flip_image(out[params["hflip"]])
        if params["vflip"].any():
            out[params["vflip"]] = F.vertical_flip_image(out[params["vflip"]])
        if params["noise"] is not None:
            out = (out.float() + params["noise"].to(out.device)).round_().clamp_(0, 255).to(torch.uint8)
        return out

    def __call__(self, images, seed: int):
        """Augment a uint8 batch (B, C, H, W) with parameters drawn from ``seed``; returns a uint8 batch.

        With nothing enabled (the "none" recipe) the input itself is returned.
        """
        import torch

        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"Augment takes a uint8 tensor (B, C, H, W), got {got}.")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"Augment takes 1 or 3 channels (B, C, H, W), got C={images.shape[1]} in shape "
                             f"{tuple(images.shape)}; channels-last arrays need .permute(0, 3, 1, 2).")
        if not self.cfg.enabled or len(images) == 0:
            return images
        return self.apply(images, self.sample(images.shape, seed))


def _centre_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """v2.RandomResizedCrop's fallback: the whole image, narrowed to the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return width, int(round(width / ratio[0]))
    if in_ratio > ratio[1]:
        return int(round(height * ratio[1])), height
    return width, height


def normalise(images, mean, std):
    """``(images / 255 - mean) / std`` as float32, in one fused multiply-add.

    Args:
        images: uint8 tensor (B, C, H, W).
        mean, std: a number, or one per channel (in [0, 1] pixel units, like the images after / 255).
    Returns:
        float32 tensor (B, C, H, W).
    """
    import torch

    c = images.shape[1]
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise UserError(f"normalisation mean {mean.tolist()} / std {std.tolist()} must give one value, or one per "
                        f"channel ({c}); set the image inputs' mean and std to match the channels.")
    if (std <= 0).any():
        raise UserError(f"normalisation std {std.tolist()} must be positive; set the image inputs' std to the "
                        f"pixel standard deviation in [0, 1] units (e.g. 0.5).")
    # x / 255 / std - mean / std, folded into one scale and one shift per channel.
    scale = (1.0 / (255.0 * std)).reshape(1, -1, 1, 1)  # (1, C or 1, 1, 1)
    shift = (-mean / std).reshape(1, -1, 1, 1)
    return torch.addcmul(shift.to(images.device), images.to(torch.float32), scale.to(images.device))


def _benchmark() -> None:
    """The docstring's timings: a batch of 128 1x28x28 images on one thread."""
    import time

    import torch

    from ..compat import import_torchvision

    import_torchvision()
    from torchvision.transforms import v2

    torch.set_num_threads(1)
    images = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def best_ms(fn, repeats: int = 20) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    cfg = augment_config("xray")
    compose = v2.Compose([
        v2.RandomResizedCrop(28, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True),
        v2.RandomAffine(cfg.rotation, translate=(cfg.translate, cfg.translate),
                        interpolation=v2.InterpolationMode.BILINEAR)])

    def per_image_v2():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return torch.stack([compose(img) for img in images])

    everything = augment_config("xray,hflip=1,vflip=1,brightness=0.2,contrast=0.2,blur=0.5,noise=0.02")
    print(f"v2.Compose per image (xray):  {best_ms(per_image_v2):6.1f} ms / 128 images")
    print(f"Augment (xray):               {best_ms(lambda: Augment(cfg)(images, 0)):6.1f} ms / 128 images")
    print(f"Augment (every step on):      {best_ms(lambda: Augment(everything)(images, 0)):6.1f} ms / 128 images")


if __name__ == "__main__":
    _benchmark()
