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
