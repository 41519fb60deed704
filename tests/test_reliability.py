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
    # A shell that runs the suite in the background (`make test &`, nohup) leaves SIGINT ignored, and an ignored
    # SIGINT is inherited: restore the default so the child sees Ctrl-C as a user's terminal would deliver it.
    return subprocess.Popen([sys.executable, str(script), *args], env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _logged_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(l)["step"] for l in lines if l.strip()), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def _wait_until(proc: subprocess.Popen, condition, timeout: float = 300.0) -> None:
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
    seed = int(os.environ.get("TL_KILL_SEED", "7"))  # docs/reliability.md: other seeds, other kill points
    rng = random.Random(seed)
    ref, run = tmp_path / "ref", tmp_path / "run"
    # The uninterrupted reference runs in this process with the same thread count as the children (1).
    torch.set_num_threads(1)
    assert main(_pretrain_args(corpus_dir, ref)) == 0

    def kill_at_random_step(first: int, last: int, which: int) -> None:
        """SIGKILL once the run has logged a random step in [first, last] (+ a random fraction of a step)."""
        proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 24, "--resume", "auto"))
        target = rng.randint(first, last)
        _wait_until(proc, lambda: _logged_step(run) >= target)
        time.sleep(rng.uniform(0, 0.02))
        _kill(proc)
        print(f"seed {seed}: kill {which} after step {_logged_step(run)}, "
              f"checkpoints {_assert_no_incomplete_checkpoint(run)}")

    # 1) SIGKILL at a random step, from scratch.
    kill_at_random_step(2, 7, 1)

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
    kill_at_random_step(14, 22, 3)

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


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_say_how_to_resume(tmp_path, corpus_dir, sig, status):
    """Ctrl-C, and SIGTERM (a batch scheduler's pre-emption, `kill`), both end the run with a resumable checkpoint."""
    run = tmp_path / "run"
    proc = _start(tmp_path, _pretrain_args(corpus_dir, run, 400))
    _wait_until(proc, lambda: _logged_step(run) >= 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    saved = [p for p in ckpt.step_checkpoints(run)]
    assert saved, err
    step = json.loads((saved[-1] / "trainer_state" / "state.json").read_text())["step"]
    assert step >= 3 and f"interrupted at step {step}; checkpoint saved to {saved[-1]}" in err
    assert "--resume auto" in err
    _assert_no_incomplete_checkpoint(run)
    # Following the advice continues from that step (a shorter --steps finishes the test quickly).
    torch.set_num_threads(1)
    assert main(_pretrain_args(corpus_dir, run, step + 2, "--resume", "auto")) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == step + 2


# --------------------------------------------------------------------------------------------- numerical faults

def _poison(monkeypatch, bad_calls: set[int]) -> None:
    """Make the MLM objective return a NaN loss on the given training forward calls (0-based)."""
    from transferlab.objectives import OBJECTIVES

    family, cls, corruption = OBJECTIVES["mlm"]

    class Poisoned(cls):
        calls = 0

        def forward(self, batch):
            out = super().forward(batch)
            if torch.is_grad_enabled():  # evaluation runs under no_grad and is not counted
                if Poisoned.calls in bad_calls:
                    out = dict(out, loss=out["loss"] * float("nan"))
                Poisoned.calls += 1
            return out

    monkeypatch.setitem(OBJECTIVES, "mlm", (family, Poisoned, corruption))


def _cfg(corpus_dir, out, steps=6, **kw):
    from transferlab.recipes.pretrain import PretrainConfig

    return PretrainConfig(corpus=str(corpus_dir), out=str(out), model="tiny", seq_len=32, batch_size=8, steps=steps,
                          save_every=2, log_every=1, eval_batches=2, progress=False, **kw)


def test_nan_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, corpus_dir, monkeypatch):
    from transferlab.recipes.pretrain import pretrain

    _poison(monkeypatch, {4})
    with pytest.raises(UserError, match=r"loss became NaN or infinite at step 5 .*step-0000004.*--on-nan skip"):
        pretrain(_cfg(corpus_dir, tmp_path / "run"))
    assert ckpt.step_checkpoints(tmp_path / "run")[-1].name == "step-0000004"
    assert not (tmp_path / "run" / "final").exists()


def test_nan_skip_counts_and_logs_skipped_batches(tmp_path, corpus_dir, monkeypatch):
    from transferlab.recipes.pretrain import pretrain

    _poison(monkeypatch, {2, 3})
    final = pretrain(_cfg(corpus_dir, tmp_path / "run", on_nan="skip"))
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    faults = [(r["step"], r["skipped_batches"]) for r in rows if r.get("fault")]
    assert faults == [(3, 1), (4, 2)]
    assert all(r["fault"] == "loss nan" for r in rows if r.get("fault"))
    last_train = [r for r in rows if r["split"] == "train"][-1]
    assert last_train["step"] == 6 and last_train["skipped_batches"] == 2 and last_train["loss"] == last_train["loss"]
    state = json.loads((tmp_path / "run" / "step-0000006" / "trainer_state" / "state.json").read_text())
    assert state["skipped_batches"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt.load_weights(final).values())


def test_nan_skip_gives_up_after_too_many_in_a_row(tmp_path, corpus_dir, monkeypatch):
    from transferlab.recipes.pretrain import pretrain

    _poison(monkeypatch, set(range(1, 100)))
    with pytest.raises(UserError, match=r"11 batches in a row .*max_nan_skips=10.*step 12"):
        pretrain(_cfg(corpus_dir, tmp_path / "run", steps=20, on_nan="skip"))


def test_on_nan_option_reaches_the_config():
    from transferlab.cli import build_parser

    args = build_parser().parse_args(["pretrain", "--corpus", "c", "--out", "o", "--on-nan", "skip"])
    assert args.on_nan == "skip"
    with pytest.raises(UserError, match="--on-nan"):
        from transferlab.training.loop import TrainConfig

        TrainConfig(on_nan="ignore")


# ------------------------------------------------------------------------------------------ disk full, read-only

def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, corpus_dir, monkeypatch):
    from transferlab.recipes.pretrain import pretrain

    real = ckpt.save_file

    def full_disk(tensors, filename, *args, **kwargs):
        if "step-0000004.tmp-" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"No space left on device.*last complete checkpoint is .*step-0000002.*"
                                        r"--resume auto"):
        pretrain(_cfg(corpus_dir, run))
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step-")) == ["step-0000002"]
    assert ckpt.check_complete(run / "step-0000002") is None
    monkeypatch.setattr(ckpt, "save_file", real)  # space freed: the advice works
    assert pretrain(_cfg(corpus_dir, run), resume=True).is_dir()


def test_read_only_output_is_a_clear_error(tmp_path, corpus_dir, monkeypatch, capsys):
    import transferlab.fsutil as fsutil
    from transferlab.recipes.pretrain import pretrain

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fsutil.tempfile, "mkdtemp", read_only)
    with pytest.raises(UserError, match=r"cannot write .*step-0000002.*Read-only file system"):
        pretrain(_cfg(corpus_dir, tmp_path / "run"))
    monkeypatch.undo()
    # An --out that cannot be created at all (its parent is a file): exit 2, one paragraph, no traceback.
    (tmp_path / "file").write_text("x")
    assert main(_pretrain_args(corpus_dir, tmp_path / "file" / "run", 2)) == 2
    err = capsys.readouterr().err
    assert "\nerror: cannot read or write" in err and "Not a directory" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ overwriting

def test_no_command_overwrites_existing_output_without_overwrite(tmp_path, corpus_text, corpus_dir, pretrained_dir,
                                                                 labeled_files, capsys):
    train, dev = labeled_files
    taken = {name: tmp_path / name / "keep.txt" for name in ("tok", "corpus", "run", "ft")}
    taken.update({name: tmp_path / name for name in ("preds.tsv", "curves.png")})
    for path in taken.values():
        path.parent.mkdir(exist_ok=True)
        path.write_text("precious")
    commands = {
        "tok": ["tokenizer", "train", "--input", corpus_text, "--vocab-size", 120, "--out", tmp_path / "tok"],
        "corpus": ["corpus", "prepare", "--input", corpus_text, "--tokenizer", corpus_dir, "--out",
                   tmp_path / "corpus"],
        "run": _pretrain_args(corpus_dir, tmp_path / "run", 2),
        "ft": ["finetune", "--init", pretrained_dir, "--train", train, "--epochs", 1, "--out", tmp_path / "ft"],
        "preds.tsv": ["predict", "--model", pretrained_dir, "--data", dev, "--out", tmp_path / "preds.tsv"],
        "curves.png": ["plot", tmp_path / "run", "--out", tmp_path / "curves.png"],
    }
    for name, args in commands.items():
        assert main([str(a) for a in args] + ["--quiet"] * (name in ("tok", "corpus", "ft"))) == 2, name
        err = capsys.readouterr().err
        assert "--overwrite" in err and "Traceback" not in err, (name, err)
        assert taken[name].read_text() == "precious", name


# ---------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_bits_other_seed_other_bits(tmp_path, corpus_dir):
    from transferlab.recipes.pretrain import pretrain

    torch.set_num_threads(1)
    files = [pretrain(_cfg(corpus_dir, tmp_path / name, steps=3, seed=seed)) / "model.safetensors"
             for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (f.read_bytes() for f in files)
    assert a == b and a != c


# ------------------------------------------------------------------------------------------------- security

@pytest.fixture(scope="module")
def short_run(tmp_path_factory, corpus_dir) -> Path:
    from transferlab.recipes.pretrain import pretrain

    out = tmp_path_factory.mktemp("short") / "run"
    pretrain(_cfg(corpus_dir, out, steps=4))
    return out


class _Payload:
    """Unpickling this calls open(path, "w"): a file appears if the pickle is ever executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _remark(directory: Path) -> None:
    """Re-write complete.json as an attacker would, so the planted file passes the completeness check."""
    (directory / ckpt.MARKER).unlink()
    ckpt._write_marker(directory)


def test_planted_pickle_in_trainer_state_is_not_executed(tmp_path, short_run, corpus_dir):
    import shutil

    from transferlab.recipes.pretrain import pretrain

    # The payload is real: an unsafe load creates the file.
    probe = tmp_path / "probe.pt"
    torch.save({"state": _Payload(tmp_path / "proof")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "proof").exists()

    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    settings = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(settings, out=str(run))))
    latest = ckpt.step_checkpoints(run)[-1]
    pwned = tmp_path / "pwned"
    torch.save({"state": _Payload(pwned), "param_groups": []}, latest / "trainer_state" / "optimizer.pt")
    _remark(latest)
    with pytest.raises(UserError, match=r"refusing .*optimizer\.pt.*Nothing in it was executed"):
        pretrain(_cfg(corpus_dir, run, steps=6), resume=True)
    assert not pwned.exists()


def test_weights_that_are_a_pickle_are_refused(tmp_path, short_run):
    import shutil

    from transferlab.transfer.pretrained import load_model

    final = tmp_path / "final"
    shutil.copytree(short_run / "final", final)
    torch.save({"w": _Payload(tmp_path / "pwned")}, final / "model.safetensors")
    _remark(final)
    with pytest.raises(UserError, match="not safetensors"):
        load_model(final)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("change,needle", [
    ("drop", r"missing \['backbone\.[^']+'\]"),
    ("shape", r"shape mismatch backbone\.\S+ \(3, 5\) vs expected"),
    ("dtype", r"dtype mismatch backbone\.\S+ torch\.float16 vs expected torch\.float32"),
    ("extra", r"unexpected \['backbone\.layers\.9\.w'\]"),
])
def test_weights_not_matching_the_config_are_refused_with_keys_named(tmp_path, short_run, change, needle):
    import shutil

    from safetensors.torch import save_file

    from transferlab.transfer.pretrained import load_model

    final = tmp_path / "final"
    shutil.copytree(short_run / "final", final)
    weights = load_file(str(final / "model.safetensors"))
    key = sorted(k for k in weights if k.startswith("backbone.") and weights[k].dim() == 2)[0]
    if change == "drop":
        del weights[key]
    elif change == "shape":
        weights[key] = torch.zeros(3, 5)
    elif change == "dtype":
        weights[key] = weights[key].half()
    else:
        weights["backbone.layers.9.w"] = torch.zeros(2)
    save_file(weights, str(final / "model.safetensors"))
    with pytest.raises(UserError, match="incomplete"):  # the size no longer matches complete.json
        load_model(final)
    _remark(final)
    with pytest.raises(UserError, match=needle):
        load_model(final)


def test_partial_copy_of_a_checkpoint_is_caught(tmp_path, short_run):
    import shutil

    from transferlab.training.checkpoint import load_config

    final = tmp_path / "final"
    shutil.copytree(short_run / "final", final)
    data = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"incomplete: model\.safetensors has \d+ bytes, \d+ were written"):
        load_config(final)


# --------------------------------------------------------------------------------------------------- memory

@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_memory_stays_flat_over_many_steps(tmp_path, corpus_dir, precision):
    from transferlab.training.memory import RSSMonitor
    from transferlab.recipes.pretrain import pretrain

    torch.set_num_threads(1)
    monitor = RSSMonitor()
    # "auto" is bf16 where the CPU has it: there every new matmul shape used to add a cached oneDNN kernel (RSS
    # grew for hundreds of steps); the LM loss pads its rows so the shapes repeat (docs/reliability.md).
    cfg = _cfg(corpus_dir, tmp_path / "run", steps=150, eval_every=1000, precision=precision)
    cfg.save_every, cfg.log_every = None, 50
    pretrain(cfg, callbacks=[monitor])
    assert len(monitor.samples) == 150
    growth = monitor.growth(warmup=30)
    assert growth < 4 * 2**20, (f"RSS grew by {growth / 2**20:.1f} MiB over steps 30-150: "
                                f"{[round(r / 2**20, 1) for _, r in monitor.samples[::20]]} MiB")
