"""The vision bias probe: stroke styles are what they claim, the sources have the stated share of each style, a
tiny probe writes every file and resumes, and bad settings are refused naming their option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from transferlab.cli import build_parser, main
from transferlab.data.images import ImageSet, read_images
from transferlab.data.styles import assign_styles, ink, restyle
from transferlab.errors import UserError
from transferlab.experiments.vision_bias import KINDS, VisionBiasConfig, run_vision_bias


def strokes(n: int, seed: int, classes: int = 4, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like images: class 0 a horizontal stroke, 1 a vertical one, 2 a diagonal, 3 a cross; 2-3 px wide
    (a faint third row on the bars, as anti-aliasing leaves), at a random place on a black ground."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), dtype=np.uint8)
    y = rng.integers(0, classes, n)
    length = size // 2
    for i in range(n):
        r, c = rng.integers(2, size - length - 2, 2)
        if y[i] in (0, 3):
            x[i, r:r + 2, c:c + length] = 255
            x[i, r + 2, c:c + length] = 90
        if y[i] in (1, 3):
            x[i, r:r + length, c:c + 2] = 255
            x[i, r:r + length, c + 2] = 90
        if y[i] == 2:
            k = np.arange(length)
            for w in range(3):
                x[i, r + k, c + k + w] = 255
    return x, y


def test_thick_has_more_ink_than_thin_in_every_image_and_labels_are_untouched():
    x, y = strokes(64, 0, size=28)
    data = ImageSet.from_arrays(x, y)
    thin, thick = restyle(data, "thin"), restyle(data, "thick")
    assert np.all(ink(thick.images) > ink(data.images)) and np.all(ink(data.images) > ink(thin.images))
    assert np.all(ink(thin.images) > 0), "thin keeps every stroke"
    # erosion never adds ink, dilation never removes it, pixel by pixel
    assert np.all(thin.images <= data.images) and np.all(thick.images >= data.images)
    for styled in (thin, thick):
        np.testing.assert_array_equal(styled.labels, data.labels)
        assert styled.label_names == data.label_names and styled.names == data.names
    np.testing.assert_array_equal(restyle(data, "inverted").images, 255 - data.images)
    np.testing.assert_array_equal(restyle(data, "plain").images, data.images)
    # one style per image: each image gets exactly its own style
    per = np.array(["thin", "thick"] * 32, dtype=object)
    mixed = restyle(data, per)
    np.testing.assert_array_equal(mixed.images[::2], thin.images[::2])
    np.testing.assert_array_equal(mixed.images[1::2], thick.images[1::2])
    with pytest.raises(UserError, match="unknown style 'bold'"):
        restyle(data, "bold")


@pytest.mark.data
def test_styles_on_real_mnist_digits():
    d = SHARED_DATA / "mnist"
    if not d.is_dir():
        pytest.skip("shared MNIST not present")
    digits = read_images(d, "test").subset(range(200))
    thin, thick = ink(restyle(digits, "thin").images), ink(restyle(digits, "thick").images)
    assert np.all(thick > thin) and np.all(thin > 0)
    # the documented contrast: about four times the ink (data/styles.py)
    assert 3 < thick.mean() / thin.mean() < 5.5


def test_sources_have_the_stated_share_of_style_a_and_are_nested():
    n = 20000
    skewed = assign_styles(n, 0.95, ("thick", "thin"), seed=3)
    balanced = assign_styles(n, 0.5, ("thick", "thin"), seed=3)
    for styles, share in ((skewed, 0.95), (balanced, 0.5)):
        se = np.sqrt(share * (1 - share) / n)
        assert abs(np.mean(styles == "thick") - share) < 4 * se
        assert set(styles.tolist()) == {"thick", "thin"}
    # the same draw decides both sources: balanced's style-A images are style A in the skewed source too
    assert np.all(skewed[balanced == "thick"] == "thick")
    assert not np.array_equal(assign_styles(n, 0.5, ("thick", "thin"), seed=4), balanced)


@pytest.fixture(scope="module")
def stroke_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("styles") / "strokes.npz"
    (xa, ya), (xb, yb) = strokes(160, 1), strokes(120, 2)
    np.savez(path, train_images=xa, train_labels=ya, test_images=xb, test_labels=yb)
    return path


def tiny(npz, out, **kw) -> VisionBiasConfig:
    settings = dict(data=str(npz), out=str(out), model="resnet-tiny", steps=3, batch_size=32, target_labels=20,
                    transfer_steps=2, transfer_batch_size=16, seeds=2, progress=False)
    return VisionBiasConfig(**{**settings, **kw})


def test_tiny_probe_writes_every_file_and_resumes(stroke_npz, tmp_path, monkeypatch):
    # One thread: 16x16 images through resnet-tiny gain nothing from a second one, and on a busy machine a second
    # OpenMP thread that waits for a core made each backward pass ~30x slower.
    torch.set_num_threads(1)
    out = tmp_path / "probe"
    result = run_vision_bias(tiny(stroke_npz, out))
    for name in ("vision_bias.json", "vision_bias.md", "vision_bias.png"):
        assert (out / name).is_file()
    assert (out / "vision_bias.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "vision_bias.json").read_text())
    assert set(saved) == {"settings", "data", "runs", "summary", "seconds", "conclusion"}
    assert len(saved["runs"]) == 4 and {(r["seed"], r["source"]) for r in saved["runs"]} == {
        (s, src) for s in (0, 1) for src in ("skewed", "balanced")}
    for r in saved["runs"]:
        assert set(r) >= {"share_a", "source_images", "pretrain_seconds", *KINDS}
        for kind in KINDS:
            assert set(r[kind]) >= {"A", "B", "gap", "all"} and 0 <= r[kind]["B"] <= 1
            assert r[kind]["gap"] == pytest.approx(r[kind]["A"] - r[kind]["B"])
        assert r["source_images"]["thick"] + r["source_images"]["thin"] == 160
        if r["source"] == "balanced":
            assert 0.35 < r["share_a"] < 0.65
        else:
            assert r["share_a"] > 0.85
    for kind in KINDS:
        entry = saved["summary"][kind]
        assert set(entry) >= {"skewed", "balanced", "paired", "verdict", "spread"}
        paired = [a - b for a, b in zip(entry["skewed"]["B"]["values"], entry["balanced"]["B"]["values"])]
        assert entry["paired"]["B"]["mean"] == pytest.approx(np.mean(paired))
    # 20 labels: 5 per style x class cell; the rest of the 120 test images evaluate
    assert sum(saved["data"]["target_labels"]["train"].values()) == 20
    assert sum(saved["data"]["target_labels"]["eval"].values()) == 100
    report = (out / "vision_bias.md").read_text()
    assert "| model | source | thick (A, majority) | thin (B, minority) | gap A - B |" in report
    assert "## Conclusion" in report and "transferlab probe vision-bias --data" in report
    assert result["conclusion"] == saved["conclusion"]

    # Again with the same settings: nothing trains again; a lost probe.json redoes only the transfers.
    import transferlab.recipes.pretrain as recipe

    def no_pretraining(*a, **k):
        raise AssertionError("a finished pretraining run was trained again")

    monkeypatch.setattr(recipe, "pretrain", no_pretraining)
    (out / "runs" / "seed-1" / "skewed" / "probe.json").unlink()
    again = run_vision_bias(tiny(stroke_npz, out))
    assert again["summary"]["linear-probe"]["skewed"]["A"]["values"] == pytest.approx(
        result["summary"]["linear-probe"]["skewed"]["A"]["values"])
    with pytest.raises(UserError, match="--skew 0.95"):
        run_vision_bias(tiny(stroke_npz, out, skew=0.9))


def test_cli_defaults_are_the_config_defaults():
    from transferlab.cli_args import settings_from

    # The options are generated from the config's fields: what the command line builds is the config's defaults.
    args = settings_from(VisionBiasConfig, build_parser().parse_args(["probe", "vision-bias", "--data", "d",
                                                                      "--out", "o"]))
    cfg = VisionBiasConfig(data="d", out="o")
    for name in ("skew", "model", "steps", "batch_size", "lr", "augment", "source_size", "target", "target_labels",
                 "transfer_steps", "transfer_batch_size", "probe_lr", "finetune_lr", "seeds", "precision"):
        assert getattr(args, name) == getattr(cfg, name), name
    assert tuple(args.styles) == cfg.styles


@pytest.mark.parametrize("options, named", [
    (["--skew", "1.0"], "--skew 1.0 is outside [0.5, 1)"),
    (["--skew", "0.3"], "--skew 0.3 is outside [0.5, 1)"),
    (["--target-labels", "8"], "--target-labels 8 is too few"),
    (["--target-labels", "200"], "--target-labels 200 needs 50 training images of style"),
    (["--styles", "thin,thin"], "--styles thin,thin"),
    (["--styles", "thick,bold"], "--styles: unknown style 'bold'"),
    (["--model", "resnet-huge"], "--model"),
])
def test_cli_refuses_bad_settings_naming_the_option(stroke_npz, tmp_path, capsys, options, named):
    code = main(["probe", "vision-bias", "--data", str(stroke_npz), "--out", str(tmp_path / "o"), "--quiet",
                 *options])
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "o").exists(), "nothing written for a refused run"


def test_cli_refuses_data_without_labels_or_test_split(tmp_path, capsys):
    x, _ = strokes(40, 0, size=28)
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, train_images=x, test_images=x)
    assert main(["probe", "vision-bias", "--data", str(unlabeled), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--data" in (err := capsys.readouterr().err) and "has no labels" in err
    no_test = tmp_path / "no_test.npz"
    np.savez(no_test, train_images=x, train_labels=np.zeros(40, dtype=np.int64))
    assert main(["probe", "vision-bias", "--data", str(no_test), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no test (or val) split" in capsys.readouterr().err


def test_an_unrelated_out_directory_is_not_touched(stroke_npz, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert main(["probe", "vision-bias", "--data", str(stroke_npz), "--out", str(tmp_path / "o"), "--quiet",
                 "--target-labels", "20"]) == 2
    assert "does not hold a vision bias probe" in capsys.readouterr().err
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"
