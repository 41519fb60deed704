"""FSDP: `torchrun --nproc_per_node=2 ... --distributed fsdp` (gloo, CPU) trains what one process trains, and its
checkpoints are the ordinary ones: an FSDP run resumes in one process, a one-process run resumes sharded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import transferlab
from conftest import on_gloo_ranks
from test_distributed import SETTINGS, _assert_same_weights, _cli_args, _losses
from transferlab import cli
from transferlab.errors import UserError
from transferlab.training.loop import TrainConfig
from transferlab.recipes.pretrain import PretrainConfig, pretrain
from transferlab.recipes.finetune import FinetuneConfig, finetune
from transferlab.transfer.methods import check_distributed

SRC = Path(transferlab.__file__).resolve().parents[1]
# The DDP test's run, with two micro-batches per step: FSDP's gradient sync is skipped on the first. Gradient
# clipping (1.0) is active at every step (the global norms are 2.0-2.9), so clipping each rank's shard by its own
# norm would show up as different weights.
FSDP = dict(SETTINGS, grad_accum=2)


def _torchrun(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "transferlab",
           *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _as_if_stopped_at_step_3(run: Path, copy: Path) -> Path:
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "step-0000006")
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_dir):
    """The same pretraining in one process and sharded over 2 gloo processes."""
    root = tmp_path_factory.mktemp("fsdp")
    _torchrun(*_cli_args(corpus_dir, root / "fsdp", **FSDP), "--distributed", "fsdp")
    pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(root / "single"), progress=False, **FSDP))
    return root


def test_fsdp_trains_what_one_process_trains(runs):
    one, two = _losses(runs / "single"), _losses(runs / "fsdp")
    assert sorted(two) == list(range(1, FSDP["steps"] + 1))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"
    _assert_same_weights(runs / "fsdp" / "final", runs / "single" / "final")
    assert one[FSDP["steps"]] < one[1], "the runs actually trained"


def test_fsdp_checkpoint_has_the_one_process_format(runs):
    """Full weights and the optimizer state keyed by parameter index, as one process writes them."""
    load = lambda run: torch.load(run / "step-0000006" / "trainer_state" / "optimizer.pt", weights_only=True)
    sharded, single = load(runs / "fsdp"), load(runs / "single")
    assert sharded["param_groups"] == single["param_groups"]
    assert sharded["state"].keys() == single["state"].keys()
    for i, state in single["state"].items():
        for key, value in state.items():
            assert sharded["state"][i][key].shape == value.shape  # full tensors, not one rank's shard
            torch.testing.assert_close(sharded["state"][i][key], value, atol=1e-4, rtol=1e-4)
    model = transferlab.from_pretrained(runs / "fsdp" / "final", num_labels=2, verbose=False)
    assert model.module.num_labels == 2


def test_fsdp_run_resumes_in_one_process(runs, corpus_dir):
    resumed = _as_if_stopped_at_step_3(runs / "fsdp", runs / "fsdp-resumed")
    pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(resumed), progress=False, **FSDP), resume=True)
    _assert_same_weights(resumed / "final", runs / "single" / "final")
    one, again = _losses(runs / "single"), _losses(resumed)
    for step in range(4, FSDP["steps"] + 1):
        assert again[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"


def test_one_process_run_resumes_sharded(runs, corpus_dir):
    """The sharded load: full weights and optimizer state cut into each rank's shards."""
    resumed = _as_if_stopped_at_step_3(runs / "single", runs / "single-resumed")
    _torchrun(*_cli_args(corpus_dir, resumed, **FSDP), "--distributed", "fsdp", "--resume", "auto")
    _assert_same_weights(resumed / "final", runs / "single" / "final")
    one, again = _losses(runs / "single"), _losses(resumed)
    assert sorted(again) == list(range(1, FSDP["steps"] + 1)), "the log holds each step once"
    for step in range(4, FSDP["steps"] + 1):
        assert again[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), f"step {step}"


def test_unknown_strategy_is_refused():
    with pytest.raises(UserError, match="--distributed 'zero'.*ddp.*fsdp"):
        TrainConfig(steps=1, distributed="zero")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "--corpus", "c", "--out", "o", "--distributed", "zero"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("method, message", [
    ("lora", "--method lora cannot be combined with --distributed fsdp.*--distributed ddp"),
    ("gradual-unfreeze", "--method gradual-unfreeze cannot run data-parallel.*Run it in one process")])
def test_methods_that_change_the_model_while_training_are_refused(method, message, pretrained_dir, labeled_files,
                                                                   tmp_path):
    train, _ = labeled_files
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run")
    cfg = FinetuneConfig(init=str(pretrained_dir), train=str(train), out=str(out), method=method,
                         distributed="fsdp", progress=False)
    with pytest.raises(UserError, match=message):
        finetune(cfg, overwrite=True)
    assert (out / "keep.txt").is_file(), "refused before the output directory was touched"


def _finetune(init: Path, train: Path, out: Path, distributed: str) -> None:
    """Fine-tune (dropout off: masks are drawn per process), then save through the facade."""
    torch.set_num_threads(1)
    model = transferlab.from_pretrained(init, num_labels=2, label_names=["neg", "pos"], dropout=0.0, verbose=False)
    model.compile(lr=1e-3, warmup=0.0, precision="fp32")
    model.fit(str(train), epochs=1, batch_size=25, run_dir=out, verbose=False, distributed=distributed)
    model.save(out / "saved")  # the model stays sharded after fit: every rank gathers, rank 0 writes


def test_sharded_fine_tuning_equals_one_process_and_saves(pretrained_dir, labeled_files, tmp_path):
    train, _ = labeled_files
    on_gloo_ranks(_finetune, pretrained_dir, train, tmp_path / "fsdp", "fsdp")
    _finetune(pretrained_dir, train, tmp_path / "single", "fsdp")  # one process: the option changes nothing
    _assert_same_weights(tmp_path / "fsdp" / "final", tmp_path / "single" / "final")
    _assert_same_weights(tmp_path / "fsdp" / "saved", tmp_path / "single" / "final")


def _refuses_gradual_unfreeze_under_ddp() -> None:
    with pytest.raises(UserError, match="--method gradual-unfreeze cannot run data-parallel"):
        check_distributed("gradual-unfreeze", "ddp")
    check_distributed("finetune", "ddp")  # what the message suggests is accepted


def test_gradual_unfreezing_is_refused_under_ddp_too():
    """DDP fixes at its first step which parameters it reduces; parameters unfrozen later would never be averaged
    (in fact DDP stops with an error), so the method is refused in every rank before training."""
    check_distributed("gradual-unfreeze", "ddp")  # one process: fine
    on_gloo_ranks(_refuses_gradual_unfreeze_under_ddp)
