"""Learning-rate schedules: the shapes the docs describe."""

import pytest

from transferlab.training.optim import lr_lambda


def test_wsd_warms_up_holds_the_peak_then_decays_to_zero_over_the_cooldown():
    f = lr_lambda("wsd", total_steps=100, warmup_steps=10, cooldown=0.2)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert all(f(s) == 1.0 for s in range(10, 81))  # stable until the last 20 steps
    assert [f(s) for s in (81, 90, 99)] == pytest.approx([0.95, 0.5, 0.05])
    assert f(100) == 0.0
    # the stable phase does not depend on the run's length: a longer run only moves the decay
    g = lr_lambda("wsd", total_steps=1000, warmup_steps=10, cooldown=0.2)
    assert all(f(s) == g(s) for s in range(0, 81))


def test_wsd_cooldown_of_the_whole_run_is_linear_decay():
    f = lr_lambda("wsd", total_steps=50, warmup_steps=0, cooldown=1.0)
    h = lr_lambda("linear", total_steps=50, warmup_steps=0)
    assert [f(s) for s in range(51)] == pytest.approx([h(s) for s in range(51)])


# ------------------------------------------------------------------------------------------------ time budget

def _fake_clock(monkeypatch):
    """Every optimizer step takes exactly one second on the budget's clock (it reads the clock twice a step)."""
    import itertools

    from transferlab.training.budget import TimeBudget

    ticks = itertools.count()
    monkeypatch.setattr(TimeBudget, "now", lambda self: float(next(ticks)))


def _budget_cfg(corpus_dir, out, **kw):
    from transferlab.recipes.pretrain import PretrainConfig

    return PretrainConfig(corpus=str(corpus_dir), out=str(out), model="tiny", seq_len=32, batch_size=8,
                          time_budget=1.0, schedule="wsd", lr=1e-3, save_every=10, log_every=1, eval_batches=1,
                          progress=False, **kw)


def _metrics(run):
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_time_budget_sets_the_steps_and_ends_the_schedule_with_it(tmp_path, corpus_dir, monkeypatch, capsys):
    from transferlab.recipes.pretrain import pretrain

    _fake_clock(monkeypatch)
    pretrain(_budget_cfg(corpus_dir, tmp_path / "run", steps=5))  # --steps is not used with a budget
    rows = [r for r in _metrics(tmp_path / "run") if "lr" in r]
    assert rows[-1]["step"] == 60  # one minute of one-second steps
    lr = {r["step"]: r["lr"] for r in rows}  # the rate the next step will use
    assert lr[20] == lr[48] == pytest.approx(1e-3)  # stable: refitted at step 20, when the estimate is first made
    assert lr[49] < 1e-3 and lr[60] == 0.0  # the last 12 steps (20%) decay to zero, ending with the budget
    err = capsys.readouterr().err
    assert "a 1-minute budget of steps" in err and "time budget 1 wall-clock minutes: 60 steps" in err


def test_a_budgeted_run_resumes_with_its_length_and_the_same_bits(tmp_path, corpus_dir, monkeypatch):
    from transferlab.recipes.pretrain import pretrain
    from transferlab.training.callbacks import Callback

    class StopAt(Callback):
        def on_step_end(self, state, logs):
            if state.step == 30:
                raise KeyboardInterrupt

    _fake_clock(monkeypatch)
    whole = pretrain(_budget_cfg(corpus_dir, tmp_path / "whole"))
    _fake_clock(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_budget_cfg(corpus_dir, tmp_path / "cut"), callbacks=[StopAt()])
    _fake_clock(monkeypatch)  # a fresh clock: only the saved budget state can give the length back
    resumed = pretrain(_budget_cfg(corpus_dir, tmp_path / "cut"), resume=True)
    assert _metrics(tmp_path / "cut")[-1]["step"] == 60
    assert (resumed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_time_budget_options_are_checked(capsys):
    from transferlab.cli import main

    assert main(["pretrain", "--corpus", "c", "--out", "o", "--time-budget", "0"]) == 2
    assert "--time-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a choice is refused by the argument parser
        main(["pretrain", "--corpus", "c", "--out", "o", "--time-budget", "5", "--budget-clock", "gpu"])
    assert exit_.value.code == 2 and "choose wall, cpu" in capsys.readouterr().err
