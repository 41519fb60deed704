"""Faults a long run must survive: SIGKILL at any moment, Ctrl-C, NaN/inf, a full or read-only disk, a stranger's
checkpoint, existing outputs, and memory growth. docs/reliability.md records what was tried and what held."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.training import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[1] / "src"

# Runs `transferlab` with one test-only hook: TL_TEST_SLOW_SAVE=NAME:FLAG makes the checkpoint write of step dir NAME
# pause after all its files are written (before complete.json and the rename) and create FLAG, so a test can
# SIGKILL the process in the middle of a checkpoint write. Nothing of this lives in the library.
WRAPPER = '''
import os, sys, time
from pathlib import Path
import transferlab.training.checkpoint as ckpt
hook = os.environ.get("TL_TEST_SLOW_SAVE")
if hook:
    name, flag = hook.split(":", 1)
    real = ckpt._write_marker
    def slow(directory):
        if Path(directory).name.startswith(name + ".tmp-"):
            Path(flag).write_text(str(directory))
            time.sleep(60)
        real(directory)
    ckpt._write_marker = slow
from transferlab.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env.pop("TL_TEST_SLOW_SAVE", None)
    env.update(extra)
    return env


def _pretrain_args(corpus: Path, out: Path, steps: int = 24, *more) -> list[str]:
    return ["pretrain", "--corpus", str(corpus), "--out", str(out), "--model", "tiny", "--steps", str(steps),
            "--seq-len", "32", "--batch-size", "8", "--save-every", "4", "--log-every", "1", "--eval-every", "12",
            "--quiet", *more]


def _start(tmp: Path, args: list[str], **env) -> subprocess.Popen:
    script = tmp / "tl_wrapper.py"
    if not script.exists():
        script.write_text(WRAPPER)
    return subprocess.Popen([sys.executable, str(script), *args], env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _logged_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(l)["step"] for l in lines if l.strip()), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def _wait_until(proc: subprocess.Popen, condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, "timed out waiting for the kill point"
        time.sleep(0.002)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _assert_no_incomplete_checkpoint(run: Path) -> list[str]:
    """Every directory named like a checkpoint is whole: marker present, sizes match, weights load."""
    names = []
    for d in run.iterdir():
        if ckpt.STEP_DIR.match(d.name) or d.name == "final":
            assert (d / ckpt.MARKER).is_file(), f"{d} has no completeness marker"
            assert ckpt.check_complete(d) is None, ckpt.check_complete(d)
            assert ckpt.load_weights(d)
            names.append(d.name)
    return sorted(names)


def _rows(run: Path) -> dict:
    """Last metrics row per (step, split); train rows must be one per step."""
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "a train step was logged twice"
    return {(r["step"], r["split"]): {k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in rows}


def test_sigkill_at_random_points_then_resume_is_bitwise_identical(tmp_path, corpus_dir):
    rng = random.Random(7)
    ref, run = tmp_path / "ref", tmp_path / "run"
    # The uninterrupted reference runs in this process with the same thread count as the children (1).
    torch.set_num_threads(1)
    assert main(_pretrain_args(corpus_dir, ref)) == 0

    # 1) SIGKILL at a random step (+ a random fraction of a step), from scratch.
    proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 24, "--resume", "auto"))
    target = rng.randint(2, 7)
    _wait_until(proc, lambda: _logged_step(run) >= target)
    time.sleep(rng.uniform(0, 0.02))
    _kill(proc)
    _assert_no_incomplete_checkpoint(run)

    # 2) SIGKILL in the middle of writing step-0000012 (all its files written, not yet marked and renamed).
    flag = tmp_path / "saving"
    proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 24, "--resume", "auto"),
                  TL_TEST_SLOW_SAVE=f"step-0000012:{flag}")
    _wait_until(proc, flag.exists)
    _kill(proc)
    assert Path(flag.read_text()).is_dir(), "the kill landed inside the checkpoint write"
    assert not (run / "step-0000012").exists()
    assert _assert_no_incomplete_checkpoint(run) == ["step-0000004", "step-0000008"]

    # 3) SIGKILL at a random later step.
    proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 24, "--resume", "auto"))
    target = rng.randint(14, 22)
    _wait_until(proc, lambda: _logged_step(run) >= target)
    time.sleep(rng.uniform(0, 0.02))
    _kill(proc)
    _assert_no_incomplete_checkpoint(run)

    # 4) Resume to the end.
    proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 24, "--resume", "auto"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resumed from" in err

    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name or ".old-" in p.name], "crash debris removed"
    assert "final" in _assert_no_incomplete_checkpoint(run)
    # Bitwise: the same weight file, byte for byte, and the same loss at every step.
    assert (run / "final" / "model.safetensors").read_bytes() == (ref / "final" / "model.safetensors").read_bytes()
    assert _rows(run) == _rows(ref)
