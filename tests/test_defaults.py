"""Defaults that suit the model in hand: the learning rates follow the width and say what they chose, and pretraining's
recipe (batch, optimizer, schedule) is the one docs/results/cpuhour.md measured for text."""

from __future__ import annotations

import json

import pytest

from transferlab.cli import main
from transferlab.recipes.settings import PretrainConfig
from transferlab.training.optim import default_finetune_lr, default_pretrain_lr, format_lr


def test_default_finetune_lr_is_what_the_docs_say():
    # docs/results/cpuhour.md and the --lr help: tiny 1e-3, mini 3.1e-4, small 9.8e-5, BERT-base's 5e-5
    assert [default_finetune_lr(d) for d in (128, 256, 512, 768)] == [1e-3, 3.1e-4, 9.8e-5, 5e-5]
    assert default_finetune_lr(64) == 1e-3 and default_finetune_lr(1024) == 5e-5  # held at the ends
    assert [format_lr(x) for x in (1e-3, 3.1e-4, 5e-5)] == ["1e-3", "3.1e-4", "5e-5"]


def test_finetune_prints_and_records_the_lr_it_chose(pretrained_dir, labeled_files, tmp_path, capsys):
    train, dev = labeled_files
    args = ["finetune", "--init", pretrained_dir, "--train", train, "--dev", dev, "--epochs", 1, "--quiet"]
    assert main([str(a) for a in args + ["--out", tmp_path / "default"]]) == 0
    assert "lr 1e-3 (default for d_model 128; --lr to change it)" in capsys.readouterr().err
    assert json.loads((tmp_path / "default" / "run.json").read_text())["lr"] == pytest.approx(1e-3)
    rows = [json.loads(line) for line in (tmp_path / "default" / "metrics.jsonl").read_text().splitlines()]
    assert 5e-4 < max(r["lr"] for r in rows if "lr" in r) <= 1e-3  # the schedule ran at it, not at 5e-5
    assert main([str(a) for a in args + ["--out", tmp_path / "given", "--lr", 2e-4]]) == 0
    assert "default for" not in capsys.readouterr().err
    assert json.loads((tmp_path / "given" / "run.json").read_text())["lr"] == pytest.approx(2e-4)


def test_default_pretrain_lr_is_what_the_docs_say():
    # measured on tiny (128) and mini (256); BERT-base's 1e-4 (Devlin et al. 2019) at 768; a power law between
    assert [default_pretrain_lr(d) for d in (128, 256, 512, 768)] == [3e-3, 3e-3, 3.5e-4, 1e-4]
    assert default_pretrain_lr(64) == 3e-3 and default_pretrain_lr(1024) == 1e-4


@pytest.mark.parametrize("objective, recipe", [
    ("mlm", (64, "muon", "wsd", None)),  # None: from the width once the model is built
    ("electra", (64, "muon", "wsd", None)),
    ("word2vec", (32, "adamw", "linear", 1e-3)),  # no attention blocks for Muon
    ("supervised", (32, "adamw", "linear", 1e-3)),
    ("masked-frames", (32, "adamw", "linear", 1e-3)),
])
def test_pretraining_recipe_defaults_by_modality(objective, recipe):
    cfg = PretrainConfig(objective=objective)
    assert (cfg.batch_size, cfg.optimizer, cfg.schedule, cfg.lr) == recipe
    given = PretrainConfig(objective=objective, batch_size=8, optimizer="sgd", schedule="cosine", lr=0.1)
    assert (given.batch_size, given.optimizer, given.schedule, given.lr) == (8, "sgd", "cosine", 0.1)


def test_pretrain_prints_and_records_the_lr_it_chose(corpus_dir, tmp_path, capsys):
    args = ["pretrain", "--corpus", corpus_dir, "--model", "tiny", "--steps", 2, "--seq-len", 32, "--batch-size", 4,
            "--eval-batches", 1, "--quiet"]
    assert main([str(a) for a in args + ["--out", tmp_path / "default"]]) == 0
    assert "lr 3e-3 (default for d_model 128; --lr to change it)" in capsys.readouterr().err
    run = json.loads((tmp_path / "default" / "run.json").read_text())
    assert (run["lr"], run["optimizer"], run["schedule"]) == (pytest.approx(3e-3), "muon", "wsd")
    # the run resumes with the same command: what was chosen is what is recorded
    assert main([str(a) for a in args + ["--out", tmp_path / "default", "--resume", "auto", "--steps", 3]]) == 0


def test_fsdp_takes_adamw_unless_told_otherwise():
    # FSDP splits the weight matrices Muon orthogonalises whole; the loop refuses muon under fsdp when it is asked for
    assert PretrainConfig(objective="mlm", distributed="fsdp").optimizer == "adamw"
    assert PretrainConfig(objective="mlm", distributed="fsdp", optimizer="muon").optimizer == "muon"
