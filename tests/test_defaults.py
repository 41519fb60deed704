"""Defaults that suit the model in hand: fine-tuning's learning rate follows the width, and says what it chose."""

from __future__ import annotations

import json

import pytest

from transferlab.cli import main
from transferlab.training.optim import default_finetune_lr, format_lr


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
