"""A time budget for a training run: how many optimizer steps fit in it, measured from the run's own speed.

A budgeted run times its optimizer steps (evaluations and checkpoints are not counted) and, after ``calibrate``
steps, sets its length to the steps done plus the time left over the mean time per step so far. It re-estimates at
every log interval until ``freeze_at`` of the budget is spent, then keeps that length to the end, so the
learning-rate schedule (fitted to the length each time) ends where the budget does: a warm-up–stable–decay schedule
is untouched by the re-estimates until its decay, a linear or cosine one bends a little while they last. The length
and the time spent are saved in step checkpoints, so a resumed run keeps its schedule.
"""

from __future__ import annotations

import time

from .callbacks import Callback
from .settings import BUDGET_CLOCKS


class TimeBudget(Callback):
    """``minutes`` of training on ``clock``: wall-clock time, or this process's CPU time (CPU-minutes: its threads
    add up, so two threads spend it twice as fast)."""

    state_key = "time_budget"

    def __init__(self, minutes: float, clock: str = "wall", calibrate: int = 20, freeze_at: float = 0.5):
        if minutes <= 0:
            raise ValueError(f"a time budget must be positive, got {minutes} minutes")
        if clock not in BUDGET_CLOCKS:
            raise ValueError(f"clock must be one of {BUDGET_CLOCKS}, got {clock!r}")
        self.minutes, self.clock, self.calibrate, self.freeze_at = minutes, clock, calibrate, freeze_at
        self.spent = 0.0  # seconds of timed steps
        self.steps_timed = 0
        self.total: int | None = None  # the run's length in optimizer steps, once estimated
        self.frozen = False

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def now(self) -> float:
        return time.perf_counter() if self.clock == "wall" else time.process_time()

    def add(self, seconds: float) -> None:
        """One more optimizer step, which took ``seconds``."""
        self.spent += seconds
        self.steps_timed += 1

    def estimate(self, step: int) -> int | None:
        """The steps that fit in the budget, after ``step`` of them, from this process's speed so far; None while
        calibrating or once the length is fixed. Never shorter than the next step."""
        if self.frozen or self.steps_timed < self.calibrate:
            return None
        per_step = self.spent / self.steps_timed
        return step + max(1, round((self.seconds - self.spent) / per_step))

    def set_total(self, total: int, step: int) -> None:
        """Adopt ``total`` (an estimate, the same on every data-parallel rank); fixed from ``freeze_at`` of it on,
        which every rank decides alike because it depends only on steps."""
        self.total = total
        self.frozen = step >= self.freeze_at * total

    def describe(self) -> str:
        """The length it set: "time budget 30 CPU minutes: 4,351 steps at 0.414 s a step (...)"."""
        per_step = self.spent / max(1, self.steps_timed)
        return (f"{self._name()}: {self.total:,} steps at {per_step:.3f} s a step"
                + ("" if self.frozen else f" (re-estimated until {self.freeze_at:.0%} of it is spent)"))

    def outcome(self, steps: int) -> str:
        """What the run did with it: "time budget 30 CPU minutes: 4,351 steps in 29.87 minutes of timed training"."""
        return f"{self._name()}: {steps:,} steps in {self.spent / 60:.2f} minutes of timed training"

    def _name(self) -> str:
        return f"time budget {self.minutes:g} {'CPU' if self.clock == 'cpu' else 'wall-clock'} minutes"

    def state_dict(self) -> dict:
        return {"spent": self.spent, "steps_timed": self.steps_timed, "total": self.total, "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        self.spent, self.steps_timed = state["spent"], state["steps_timed"]
        self.total, self.frozen = state["total"], state["frozen"]
