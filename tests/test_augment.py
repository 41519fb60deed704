"""Augmentation: seeded and per-sample, exactly v2's ops for the drawn parameters, recipes and settings checked."""

import pytest
import torch

from transferlab.compat import import_torchvision
from transferlab.data.augment import (
    AUGMENTATIONS,
    BLUR_KERNEL,
    Augment,
    AugmentConfig,
    augment_config,
    normalise,
)
from transferlab.errors import UserError

import_torchvision()
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

EVERY_STEP = "xray,hflip=1,vflip=1,brightness=0.3,contrast=0.3,blur=0.5,noise=0.03"


def _images(b=16, c=1, h=28, w=28, seed=0):
    """Smooth blobs plus texture, so crops and rotations change pixels (a flat image would hide them)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centre = torch.rand(b, 2, generator=g) * torch.tensor([h, w])
    blob = torch.exp(-((y - centre[:, :1, None]) ** 2 + (x - centre[:, 1:, None]) ** 2) / 40)  # (B, H, W)
    texture = torch.rand(b, c, h, w, generator=g)
    return (200 * blob[:, None] + 55 * texture).round().to(torch.uint8)  # (B, C, H, W)


@pytest.mark.parametrize("spec", ["xray", EVERY_STEP])
def test_same_seed_same_output_other_seed_other_output_global_rng_untouched(spec):
    augment, images = Augment(augment_config(spec)), _images()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = augment(images, seed=7)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not advance"
    torch.manual_seed(999)  # another global state must not matter either
    assert torch.equal(augment(images, seed=7), first)
    assert not torch.equal(augment(images, seed=8), first)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert not torch.equal(first, images)


def test_each_image_gets_its_own_parameters():
    # v2 transforms draw one set of parameters per call, so on a batch every copy of an image comes out the same;
    # Augment must give every copy its own crop and angle.
    one = _images(1)
    batch = one.expand(12, -1, -1, -1).contiguous()
    assert torch.equal(*v2.RandomRotation(30)(batch[:2]))  # the behaviour this class exists to avoid
    out = Augment(augment_config("xray"))(batch, seed=0)
    distinct = {tuple(img.flatten().tolist()) for img in out}
    assert len(distinct) == 12


def test_output_is_v2_applied_image_by_image_with_the_drawn_parameters():
    cfg = augment_config(EVERY_STEP)
    augment, images = Augment(cfg), _images(24, c=3)
    params = augment.sample(images.shape, seed=3)
    out = augment.apply(images, params)
    assert params["blur"].any() and not params["blur"].all() and params["hflip"].any() and params["vflip"].any()
    crop = v2.RandomResizedCrop(28, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True)
    blur = v2.GaussianBlur(BLUR_KERNEL)
    for i, img in enumerate(images):
        top, left, h, w = params["box"][i].tolist()
        img = crop.transform(img, dict(top=top, left=left, height=h, width=w))
        # Not v2.RandomAffine.transform: its fill=0 darkens border pixels a second time (see Augment).
        img = F.affine(img, angle=float(params["angle"][i]), translate=params["shift"][i].tolist(), scale=1.0,
                       shear=[0.0, 0.0], interpolation=v2.InterpolationMode.BILINEAR)
        img = F.adjust_contrast(F.adjust_brightness(img, float(params["brightness"][i])),
                                float(params["contrast"][i]))
        if params["blur"][i]:
            img = blur.transform(img, dict(sigma=[float(params["sigma"][i])] * 2))
        if params["hflip"][i]:
            img = F.horizontal_flip(img)
        if params["vflip"][i]:
            img = F.vertical_flip(img)
        img = (img.float() + params["noise"][i]).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(out[i], img), f"image {i}"


def test_crop_and_shift_distributions_match_v2():
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), crop_ratio=(0.5, 2.0), translate=0.1)
    n, image = 4000, torch.zeros(1, 28, 28, dtype=torch.uint8)
    ours = Augment(cfg).sample((n, 1, 28, 28), seed=0)
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(28, scale=cfg.crop_scale, ratio=cfg.crop_ratio)
    affine = v2.RandomAffine(cfg.rotation, translate=(cfg.translate,) * 2)
    theirs = [crop.make_params([image]) for _ in range(n)]
    shifts = torch.tensor([affine.make_params([image])["translate"] for _ in range(n)], dtype=torch.float64)
    box = ours["box"].double()
    v2_box = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in theirs], dtype=torch.float64)
    # Means and spreads of top, left, height, width agree to within sampling noise (~0.1 px here).
    torch.testing.assert_close(box.mean(0), v2_box.mean(0), atol=0.3, rtol=0)
    torch.testing.assert_close(box.std(0), v2_box.std(0), atol=0.3, rtol=0)
    torch.testing.assert_close(ours["shift"].double().abs().mean(0), shifts.abs().mean(0), atol=0.1, rtol=0)
    assert ours["shift"].abs().max() == 3 and ours["angle"].abs().max() <= 10


def test_flips_off_by_default_and_half_the_images_flipped_when_on():
    assert not AugmentConfig().hflip and not AugmentConfig().vflip
    assert not any(AUGMENTATIONS[r]["hflip"] or AUGMENTATIONS[r]["vflip"] for r in AUGMENTATIONS)
    images = _images(200)
    out = Augment(augment_config("none,hflip=1"))(images, seed=0)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 70 < int(mirrored.sum()) < 130


def test_turning_a_step_on_keeps_the_other_steps_parameters():
    plain = Augment(augment_config("xray")).sample((8, 1, 28, 28), seed=5)
    more = Augment(augment_config("xray,blur=1,brightness=0.5")).sample((8, 1, 28, 28), seed=5)
    assert torch.equal(plain["box"], more["box"]) and torch.equal(plain["angle"], more["angle"])


def test_none_is_identity_and_noise_stays_in_range():
    images = _images(4)
    assert Augment(augment_config("none"))(images, seed=1) is images
    assert not augment_config(None).enabled
    white = torch.full((4, 1, 8, 8), 255, dtype=torch.uint8)
    noisy = Augment(augment_config("none,noise=0.5"))(white, seed=0)
    assert noisy.dtype == torch.uint8 and noisy.max() == 255 and noisy.min() < 255


def test_rejects_wrong_tensors():
    augment = Augment()
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.rand(2, 1, 8, 8), seed=0)
    with pytest.raises(ValueError, match="permute"):
        augment(torch.zeros(2, 8, 8, 1, dtype=torch.uint8), seed=0)


def test_recipes_and_overrides():
    xray = augment_config("xray")
    assert xray == AugmentConfig(**AUGMENTATIONS["xray"])
    assert 0.75 <= xray.crop_scale[0] <= 0.85 and xray.crop_scale[1] == 1 and xray.rotation == 10
    assert 0 < xray.translate <= 0.1
    cli = augment_config("xray, rotation=5, hflip=1, crop_scale=0.9:1")
    assert (cli.rotation, cli.hflip, cli.crop_scale, cli.translate) == (5.0, True, (0.9, 1.0), xray.translate)
    assert augment_config({"recipe": "xray", "rotation": 5, "hflip": True}) == augment_config("xray,rotation=5,hflip=1")
    assert augment_config({"rotation": 3}) == AugmentConfig(rotation=3)
    assert augment_config("rotation=3") == AugmentConfig(rotation=3)
    assert augment_config(xray) is xray
    cfg = AugmentConfig(crop_scale=[0.7, 1], hflip=1)  # JSON gives lists and ints
    assert cfg.crop_scale == (0.7, 1.0) and cfg.hflip is True
    assert AugmentConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("spec, needles", [
    ("xray,rotatoin=5", ["'rotatoin'", "crop_scale", "noise"]),
    ({"recipe": "xray", "flip": True}, ["'flip'", "hflip"]),
    ("ct-scan", ["'ct-scan'", "none, light, xray"]),
    ("xray,rotation=five", ["rotation=five", "a number"]),
    ("xray,hflip=maybe", ["hflip=maybe", "1 or 0"]),
    ("xray,crop_scale=0.8", ["crop_scale=0.8", "LO:HI"]),
    ("xray,rotation", ["'rotation'", "KEY=VALUE"]),
])
def test_bad_specs_name_the_fault(spec, needles):
    with pytest.raises(UserError) as err:
        augment_config(spec)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("settings, needles", [
    ({"crop_scale": (0.5, 1.2)}, ["crop_scale", "0 < lo <= hi <= 1"]),
    ({"crop_ratio": (2.0, 1.0)}, ["crop_ratio", "lo <= hi"]),
    ({"rotation": -5}, ["rotation=-5.0", "[0, 180]"]),
    ({"translate": 1.5}, ["translate", "[0, 1]"]),
    ({"brightness": 2}, ["brightness", "[0, 1]"]),
    ({"blur": 1.1}, ["blur", "probability"]),
    ({"noise": -0.1}, ["noise", "[0, 1]"]),
    ({"hflip": "yes"}, ["hflip", "true or false"]),
    ({"crop_scale": 0.8}, ["crop_scale", "pair"]),
])
def test_out_of_range_settings_name_the_setting_and_range(settings, needles):
    with pytest.raises(UserError) as err:
        AugmentConfig(**settings)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_normalise():
    images = _images(3, c=3)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
    out = normalise(images, mean, std)
    expected = (images.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(normalise(images[:, :1], 0.5, 0.5), images[:, :1].float() / 127.5 - 1)
    with pytest.raises(UserError, match="one per channel"):
        normalise(images, [0.5, 0.5], 0.2)
    with pytest.raises(UserError, match="positive"):
        normalise(images, 0.5, 0.0)


def test_works_in_a_fresh_process():
    # A loader worker or script imports nothing beforehand; Augment must take torchvision through compat itself
    # (this test module's own import of it would hide the CPU-torch import failure).
    import subprocess
    import sys
    from pathlib import Path

    code = ("import torch; from transferlab.data.augment import Augment, augment_config; "
            "print(tuple(Augment(augment_config('xray'))(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 0).shape))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 1, 28, 28)"
