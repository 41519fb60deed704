"""Data parallelism: `torchrun --nproc_per_node=2` (gloo, CPU) trains exactly what one process trains on the same
global batch, and a run saved by 2 ranks resumes in 1 process as if it had never stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import transferlab
from conftest import on_gloo_ranks
from transferlab.training.checkpoint import load_weights
from transferlab.recipes.pretrain import PretrainConfig, pretrain

SRC = Path(transferlab.__file__).resolve().parents[1]
# Masked LM on the tiny preset, fp32 (bf16 autocast would add its own rounding), batch 8 of 32 tokens: each rank
# sees 4 rows with a different number of masked tokens, which is what the token weighting must get right.
# AdamW and linear decay (not text pretraining's default Muon + wsd): Muon orthogonalises each update in bf16, which
# turns the all-reduce's rounding differences into ~1e-3 weight differences, too coarse to check the loop against.
SETTINGS = dict(objective="mlm", model="tiny", steps=6, seq_len=32, batch_size=8, save_every=3, log_every=1,
                lr=3e-3, precision="fp32", eval_every=100, eval_batches=1, optimizer="adamw", schedule="linear")
# Float tolerance: all-reduce sums gradients in another order than one process does, and AdamW turns that rounding
# on near-zero gradients into steps of size ~lr; after 6 steps at lr 3e-3 the weights agree to 2e-5 (measured).
# Without the token weighting (each rank's mean loss weighted equally) they differ by 6.5e-3, and the step-1 losses
# by 1e-2: far outside these bounds.
ATOL, RTOL = 1e-4, 1e-4


def _cli_args(corpus: Path, out: Path, **overrides) -> list[str]:
    args = ["pretrain", "--corpus", str(corpus), "--out", str(out), "--quiet"]
    for key, value in {**SETTINGS, **overrides}.items():
        if key != "eval_batches":
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=ATOL, rtol=RTOL, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_dir):
    """The same pretraining in one process and under torchrun with 2 gloo processes."""
    root = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "transferlab", *_cli_args(corpus_dir, root / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(root / "single"), progress=False, **SETTINGS))
    return root, single.parent


def test_two_processes_train_what_one_process_trains(runs):
    root, single = runs
    ddp = root / "ddp"
    one, two = _losses(single), _losses(ddp)
    assert sorted(two) == list(range(1, SETTINGS["steps"] + 1))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"
    _assert_same_weights(ddp / "final", single / "final")
    assert one[SETTINGS["steps"]] < one[1], "the runs actually trained"


def test_run_saved_by_two_ranks_resumes_in_one_process(runs, corpus_dir):
    root, single = runs
    resumed = root / "resumed"
    shutil.copytree(root / "ddp", resumed)
    # as if the 2-rank run had stopped after its step-3 checkpoint
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "step-0000006")
    pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(resumed), progress=False, **SETTINGS), resume=True)
    _assert_same_weights(resumed / "final", single / "final")
    one, again = _losses(single), _losses(resumed)
    assert sorted(again) == list(range(1, SETTINGS["steps"] + 1)), "the log holds each step once"
    for step in range(4, SETTINGS["steps"] + 1):
        assert again[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"


def _finetune(init: Path, train: Path, out: Path) -> None:
    """Fine-tune with dropout off (dropout masks are drawn per process, so they could not match)."""
    torch.set_num_threads(1)
    model = transferlab.from_pretrained(init, num_labels=2, label_names=["neg", "pos"], dropout=0.0, verbose=False)
    model.compile(lr=1e-3, warmup=0.0, precision="fp32")
    # 160 examples in batches of 25: ranks get 13 and 12 rows, and the last batch of 10 is split 5 + 5
    model.fit(str(train), epochs=1, batch_size=25, run_dir=out, verbose=False)


def test_fine_tuning_on_two_processes_equals_one(pretrained_dir, labeled_files, tmp_path):
    train, _ = labeled_files
    on_gloo_ranks(_finetune, pretrained_dir, train, tmp_path / "ddp")
    _finetune(pretrained_dir, train, tmp_path / "single")
    _assert_same_weights(tmp_path / "ddp" / "final", tmp_path / "single" / "final")
    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert one.keys() == two.keys() and len(one) >= 2
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), f"step {step}"
