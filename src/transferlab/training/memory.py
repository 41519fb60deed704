"""Resident memory over a run: a callback that samples RSS at every step, to show a long run stays flat."""

from __future__ import annotations

import os

from .callbacks import Callback

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the peak from ``resource``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, in KiB on Linux


class RSSMonitor(Callback):
    """Record ``(step, rss_bytes)`` after every optimizer step.

    Args:
        every: sample every this many steps.
    """

    def __init__(self, every: int = 1):
        self.every = every
        self.samples: list[tuple[int, int]] = []

    def on_step_end(self, state, logs) -> None:
        if state.step % self.every == 0:
            self.samples.append((state.step, rss_bytes()))

    def growth(self, warmup: int) -> int:
        """Peak RSS of the second half of the steps after ``warmup`` minus the peak of the first half, in bytes.

        Comparing peaks of halves ignores the allocator's step-to-step swings; a leak makes the later peak higher.
        """
        after = [rss for step, rss in self.samples if step > warmup]
        if len(after) < 4:
            raise ValueError(f"need at least 4 samples after step {warmup}, have {len(after)}.")
        half = len(after) // 2
        return max(after[half:]) - max(after[:half])
