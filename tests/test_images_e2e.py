"""Images end to end on tiny data: supervised pretraining, head swap, fine-tuning with a test split, evaluate and
predict, channel adaptation, the Keras-style model on arrays, an image compare grid, and the errors a user meets
when modalities are mixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferlab
from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.training.checkpoint import _write_marker, load_weights


def bars(n: int, seed: int, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 2-class image task: a bright horizontal (0) or vertical (1) bar at a random place, on noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = rng.integers(4, 20, 2)
        if y[i] == 0:
            x[i, a:a + 3, b:b + 8] = 230
        else:
            x[i, a:a + 8, b:b + 3] = 230
    if rgb:
        x = np.repeat(x[..., None], 3, axis=-1)
    return x, y


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "bars.npz"
    arrays = {}
    for split, n, seed in (("train", 160, 0), ("val", 48, 1), ("test", 48, 2)):
        x, y = bars(n, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory, image_npz):
    """A resnet-tiny pretrained with the supervised objective for a few steps, from the CLI."""
    out = tmp_path_factory.mktemp("runs") / "sup"
    assert main(["pretrain", "--objective", "supervised", "--data", str(image_npz), "--model", "resnet-tiny",
                 "--steps", "6", "--batch-size", "16", "--eval-batches", "2", "--out", str(out), "--quiet"]) == 0
    return out / "final"


def test_supervised_pretraining_records_its_inputs_and_logs_images_per_second(image_ckpt):
    config = json.loads((image_ckpt / "config.json").read_text())
    assert config["task"]["kind"] == "supervised" and config["task"]["num_labels"] == 2
    assert config["inputs"]["modality"] == "image" and config["inputs"]["size"] == [28, 28]
    assert config["inputs"]["channels"] == 1 and 0 < config["inputs"]["std"][0] < 1
    assert config["backbone"]["family"] == "resnet"
    rows = [json.loads(line) for line in (image_ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    assert any("images_per_s" in r for r in rows if r["split"] == "train")
    assert any("roc_auc" in r for r in rows if r["split"] == "eval"), "evaluated on the val split"
    assert not (image_ckpt / "tokenizer.json").exists()


def test_finetune_swaps_the_head_and_reports_test_metrics(image_ckpt, image_npz, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(image_ckpt), "--train", str(image_npz), "--dev", str(image_npz),
                 "--test", str(image_npz), "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--augment",
                 "xray,rotation=5", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "dropped (pretraining head): heads.classifier.out.bias, heads.classifier.out.weight" in printed.err
    assert "test: loss=" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert set(results["test"]) == {"loss", "accuracy", "roc_auc", "balanced_accuracy"}
    assert results["test_examples"] == 48 and results["train_examples"] == 160
    saved, pretrained = load_weights(out / "final"), load_weights(image_ckpt)
    assert saved.keys() == pretrained.keys()  # the same backbone, a head of the same name (2 classes both)
    # evaluate and predict read the test split of the .npz by default
    assert main(["evaluate", "--model", str(out / "final"), "--data", str(image_npz)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert main(["predict", "--model", str(out / "final"), "--data", str(image_npz), "--split", "val"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "line\tprediction" and len(lines) == 49 and {ln.split("\t")[1] for ln in lines[1:]} <= {"0", "1"}


def test_scratch_twin_has_the_architecture_and_none_of_the_weights(image_ckpt):
    pre = transferlab.from_pretrained(image_ckpt, num_labels=2, verbose=False).module.state_dict()
    scratch = transferlab.from_pretrained(image_ckpt, num_labels=2, init="scratch", verbose=False).module.state_dict()
    assert pre.keys() == scratch.keys()
    assert not torch.equal(pre["backbone.conv1.weight"], scratch["backbone.conv1.weight"])


def test_grayscale_checkpoint_adapts_to_rgb_data_and_says_so(image_ckpt, tmp_path, capsys):
    """An RGB model made from a grayscale one repeats its filters over the channels (scaled by 1/3, timm's rule):
    on an RGB image whose three channels are the gray image, it computes what the gray model computes."""
    gray = transferlab.from_pretrained(image_ckpt, num_labels=2, seed=0, verbose=False)
    rgb = transferlab.from_pretrained(image_ckpt, num_labels=2, seed=0, channels=3)
    assert "adapted the first convolution from 1 to 3" in capsys.readouterr().err
    assert rgb.inputs.channels == 3 and rgb.inputs.mean == gray.inputs.mean * 3
    rgb.module.heads.load_state_dict(gray.module.heads.state_dict())  # the same fresh head on both
    x, _ = bars(6, 5)
    torch.testing.assert_close(torch.from_numpy(gray.predict(x, return_probs=True)),
                               torch.from_numpy(rgb.predict(np.repeat(x[..., None], 3, -1), return_probs=True)),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="channels=3"):
        gray.predict(np.repeat(x[..., None], 3, -1))  # the unadapted model names the fix
    rgb.save(tmp_path / "rgb")
    again = transferlab.load(tmp_path / "rgb")
    assert json.loads((tmp_path / "rgb" / "config.json").read_text())["backbone"]["in_channels"] == 3
    np.testing.assert_array_equal(again.predict(np.repeat(x[..., None], 3, -1)), rgb.predict(np.repeat(x[..., None], 3, -1)))


def test_keras_style_model_trains_on_arrays(image_ckpt):
    x, y = bars(96, 7)
    xv, yv = bars(48, 8)
    model = transferlab.from_pretrained(image_ckpt, num_labels=2, verbose=False)
    model.compile(lr=3e-3)
    history = model.fit(x, y, validation_data=(xv, yv), epochs=4, batch_size=16, verbose=False, augment="light")
    assert model.compiled.metrics == ["accuracy", "roc_auc", "balanced_accuracy"]
    assert len(history.history["val_roc_auc"]) == 4
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(xv).shape == (48,) and model.predict(xv, return_probs=True).shape == (48, 2)


def test_linear_probe_keeps_batchnorm_statistics(image_ckpt):
    x, y = bars(64, 9)
    model = transferlab.from_pretrained(image_ckpt, num_labels=2, verbose=False)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.compile(lr=1e-2, method="linear-probe")
    model.fit(x, y, epochs=1, batch_size=16, verbose=False)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.")), \
        "a frozen backbone's BatchNorm running means and variances must not move"


def test_mixing_modalities_is_refused_with_the_fix(image_ckpt, pretrained_dir, labeled_files, image_npz, tmp_path,
                                                   capsys):
    train, dev = labeled_files
    assert main(["finetune", "--init", str(image_ckpt), "--train", str(train), "--out", str(tmp_path / "a"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds text data, but the checkpoint is a image model" in err and not (tmp_path / "a").exists()
    assert main(["finetune", "--init", str(pretrained_dir), "--train", str(image_npz), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds image data, but the checkpoint is a text model" in err and "pretrain an image model" in err
    assert main(["pretrain", "--objective", "mlm", "--data", str(image_npz), "--out", str(tmp_path / "c")]) == 2
    assert "--data, --augment and --image-size are for image objectives" in capsys.readouterr().err
    assert main(["pretrain", "--objective", "supervised", "--data", str(image_npz), "--seq-len", "64",
                 "--mask-prob", "0.2", "--out", str(tmp_path / "d")]) == 2
    assert "--mask-prob apply to text objectives" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_old_text_checkpoints_without_an_inputs_record_still_load(pretrained_dir, tmp_path, labeled_files):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pretrained_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["inputs"]  # written before preprocessors were recorded
    (old / "config.json").write_text(json.dumps(config))
    (old / "complete.json").unlink()
    _write_marker(old)
    model = transferlab.from_pretrained(old, num_labels=2, verbose=False)
    assert model.inputs.modality == "text" and model.tokenizer is model.inputs
    assert model.predict(["the cat sat ."]).shape == (1,)


def test_a_tokenizer_swapped_into_a_checkpoint_is_caught(pretrained_dir, tmp_path, tokenizer):
    import shutil

    from transferlab.inputs.text import Tokenizer

    bad = tmp_path / "bad"
    shutil.copytree(pretrained_dir, bad)
    other = Tokenizer.train_from_texts(["completely different words here"] * 50, kind="bpe", vocab_size=300,
                                       progress=False)
    other.save(bad)
    (bad / "complete.json").unlink()
    _write_marker(bad)
    with pytest.raises(UserError, match="not the one its model was trained with"):
        transferlab.from_pretrained(bad, num_labels=2, verbose=False)


def test_image_compare_grid_selects_on_dev_and_reports_test(image_ckpt, image_npz, tmp_path):
    from transferlab.experiments.compare import run_compare

    spec = {"name": "bars", "checkpoints": [str(image_ckpt)],
            "task": {"train": str(image_npz), "dev": str(image_npz), "test": str(image_npz)},
            "methods": ["scratch", "finetune", "linear-probe", {"pipeline": {"pixels_per_cell": 7}}],
            "budgets": [20, "all"], "seeds": 2,
            "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "augment": "light"}}
    result = run_compare(spec, tmp_path / "grid", progress=False)
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 4 and all("test" in r for r in rows)
    networks = [r for r in rows if r["kind"] != "pipeline"]
    assert all(np.asarray(r["confusion"]).sum() == 48 for r in networks)
    assert all(r["test"]["roc_auc"] >= 0 for r in rows)
    report = (tmp_path / "grid" / "report.md").read_text()
    assert "Test accuracy of the best dev epoch's weights" in report
    # the task's other metrics get their own tables: mean ± std over seeds of what the rows recorded
    aucs = [r["test"]["roc_auc"] for r in rows if r["method"] == "finetune" and r["budget"] == "all"]
    auc_table = report.split("Test roc_auc of the best dev epoch's weights")[1].split("\n\n**")[0]
    finetune_line = next(line for line in auc_table.splitlines() if line.startswith("| finetune |"))
    assert finetune_line.endswith(f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f} |")
    again = run_compare(spec, tmp_path / "grid", progress=False)
    assert again["ran"] == 0 and again["skipped"] == 16


def test_image_spec_mistakes_name_their_line(image_ckpt, image_npz, tmp_path):
    from transferlab.experiments.compare import CompareSpec

    path = tmp_path / "spec.yaml"
    path.write_text(f"checkpoints: [{image_ckpt}]\ntask:\n  train: {image_npz}\n  dev: {image_npz}\n"
                    f"  text_cols: sentence\nmethods: [finetune]\n")
    with pytest.raises(UserError, match=r"spec.yaml:5: task.text_cols: applies to text tasks"):
        CompareSpec.parse(path)
    path.write_text(f"checkpoints: [{image_ckpt}]\ntask:\n  train: {image_npz}\n  dev: {image_npz}\n"
                    f"methods: [finetune, lora]\n")
    with pytest.raises(UserError, match=r"spec.yaml:5: methods.1: lora adapts the attention"):
        CompareSpec.parse(path)
    path.write_text(f"checkpoints: [{image_ckpt}]\ntask:\n  train: {image_npz}\n  dev: {image_npz}\n"
                    f"methods: [finetune]\ntrain:\n  augment: xray,spin=3\n")
    with pytest.raises(UserError, match=r"spec.yaml:7: train.augment"):
        CompareSpec.parse(path)


def test_lora_on_a_vit_checkpoint_trains_only_adapters_and_head(image_npz, tmp_path):
    """The ViT is the image backbone LoRA applies to: its grid cell trains a small fraction of the parameters, and
    selecting the best dev epoch (restoring its weights) works with adapters that are merged when training ends."""
    from transferlab.experiments.compare import run_compare

    out = tmp_path / "vit"
    assert main(["pretrain", "--objective", "supervised", "--data", str(image_npz), "--model", "vit-tiny",
                 "--steps", "4", "--batch-size", "16", "--eval-batches", "1", "--out", str(out), "--quiet"]) == 0
    spec = {"name": "vit-lora", "checkpoints": [str(out / "final")],
            "task": {"train": str(image_npz), "dev": str(image_npz), "test": str(image_npz)},
            "methods": ["finetune", "lora"], "budgets": ["all"], "seeds": 1,
            "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3}}
    rows = {r["method"]: r for r in run_compare(spec, tmp_path / "grid", progress=False)["rows"]}
    assert set(rows) == {"finetune", "lora"}
    assert 0 < rows["lora"]["trained_params"] < rows["finetune"]["trained_params"] / 4
    assert 0.0 <= rows["lora"]["test"]["accuracy"] <= 1.0
