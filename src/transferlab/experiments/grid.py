"""The grid runner: a list of independent runs, each a pure function of its settings, run (or resumed) with its
results appended to ``results.jsonl``. It knows nothing about modalities, models or methods — a run is anything
with a ``key`` (its place in the grid), a ``fingerprint`` (a hash of everything that decides its result), a
``cost()`` estimate for the ETA and a ``label`` for the progress line; ``run_one(run) -> dict`` does the work.

A finished run's row is there when a grid is started again with the same settings (same key and fingerprint), so
it is not run again: an interrupted grid resumes where it stopped. A row is written only when its run has finished
(fsynced), so an interrupted run simply starts over; a torn last line from a crash is dropped.

Where the runs execute is the ``executor``'s business (``executors.py``: this process, local worker processes, or a
Ray cluster); the rows are written here, by the driver alone, whichever worker finished them. A run that fails
(an exception, or its worker died twice) is reported with its log under ``logs/`` beside the results and left out
of them, so the next invocation runs it again; the other runs go on. A user mistake (``UserError``) stops the grid.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from ..fsutil import write_text
from .executors import ExecutorConfig, Sequential

RESULTS = "results.jsonl"


def read_results(path: Path) -> list[dict]:
    """Rows of results.jsonl; a torn last line (a crash mid-write) is dropped and the file repaired."""
    if not path.is_file():
        return []
    rows, good = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "fingerprint" in row:
            rows.append(row)
            good.append(line)
    text = "".join(g + "\n" for g in good)
    if text != path.read_text(encoding="utf-8"):
        write_text(path, text)
    return rows


def append_result(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_grid(plan: list, run_one: Callable[[object], dict], results_path: Path, row_key: Callable[[dict], tuple],
             progress: bool = True, describe: Callable[[object, dict], str] | None = None,
             on_resume: Callable[[], None] | None = None, executor: ExecutorConfig | None = None,
             paths: Sequence[str] = ()) -> dict:
    """Run every run of ``plan`` whose row is not in ``results_path`` yet.

    Args:
        plan: the runs, in the order to start them.
        run_one: run -> its results row (must hold the run's ``fingerprint``). With worker processes or Ray it is
            pickled once and sent to every worker: keep big data out of it (read it in the worker instead).
        results_path: the results.jsonl to read and append to.
        row_key: a stored row -> the ``run.key`` it belongs to.
        describe: (run, row) -> the line printed when it finishes.
        on_resume: called once, when the first new row has been written (e.g. to remove a report the new rows
            outdate): until then, the output is exactly as it was, whatever happens to the first run.
        executor: where the runs execute; None: one after another in this process, with torch's thread count.
        paths: files and directories every worker reads, checked before any run starts.
    Returns:
        {"rows": the finished rows of ``plan`` in plan order, "ran": runs finished now, "skipped": runs found
         finished, "failed": [{"key", "label", "log"}] of runs that failed now, "threads": per run}.
    """
    done = {row_key(row) + (row["fingerprint"],): row for row in read_results(results_path)}
    todo = [r for r in plan if r.key + (r.fingerprint,) not in done]
    ignored = len(done) - (len(plan) - len(todo))
    say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if progress else (lambda msg: None)
    if done:
        say(f"resuming {results_path.parent}: {len(plan) - len(todo)} of {len(plan)} runs already finished"
            + (f"; {ignored} rows from other settings are kept in {results_path.name} but left out" if ignored
               else ""))
    if executor is None:
        import torch

        runner, notes = Sequential(torch.get_num_threads()), []
    else:
        runner, notes = executor.build(len(todo))
    failed = []
    if todo:
        with runner:
            for note in notes:
                say(note)
            say(f"{len(todo)} run{'s' if len(todo) > 1 else ''}: {runner.describe()}")
            runner.check(paths)  # before anything changes: a worker that cannot read the data fails no run
            _drive(runner, run_one, plan, todo, done, failed, results_path, progress, describe, say, on_resume)
    return {"rows": [done[r.key + (r.fingerprint,)] for r in plan if r.key + (r.fingerprint,) in done],
            "ran": len(todo) - len(failed), "skipped": len(plan) - len(todo), "failed": failed,
            "threads": runner.threads}


class _Bar:
    """Runs done / running / failed, the share of the estimated cost done, and an ETA from measured run times."""

    def __init__(self, plan: list, todo: list, slots: int, progress: bool):
        self.total, self.slots, self.progress, self.closed = len(plan), slots, progress, False
        self.finished, self.running, self.failed = len(plan) - len(todo), 0, 0
        self.left = {id(r): r.cost() for r in todo}
        self.rates: list[float] = []  # measured this session: each run's seconds per unit of estimated cost
        self.eta, self.eta_at = None, 0.0
        # The bar advances by estimated cost, so a 67k-example run weighs more than a 100-example one. Without a
        # terminal (a log file) tqdm draws nothing (disable=None): its carriage-return frames would make one
        # unreadable line; the line printed per finished run is the log.
        total = sum(r.cost() for r in plan)
        self.bar = tqdm(total=total, initial=total - sum(self.left.values()),
                        disable=None if progress else True, file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
        self.show()

    def update(self, kind: str, run=None, wall_s: float = 0.0) -> None:
        if kind == "start":
            self.running += 1
        elif kind in ("done", "failed", "retry"):
            self.running -= 1
            if kind != "retry":
                cost = self.left.pop(id(run))
                self.bar.update(cost)
                self.finished += kind == "done"
                self.failed += kind == "failed"
                if kind == "done" and wall_s > 0 and cost > 0:
                    self.rates.append(wall_s / cost)
        if kind != "tick" and self.rates:
            # The median rate: a worker's first run also pays its imports, which a mean would spread over the
            # rest. Work left is divided over the runs that can go at once; runs in flight count whole.
            rate = statistics.median(self.rates)
            parallel = max(1, min(self.slots, len(self.left)))
            self.eta, self.eta_at = sum(self.left.values()) * rate / parallel, time.monotonic()
        self.show()

    def show(self) -> None:
        parts = [f"runs {self.finished}/{self.total}", f"{self.running} running"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        self.status = ", ".join(parts)
        self.bar.set_description_str(self.status, refresh=False)
        if self.eta is None:
            eta = "ETA after the first run" if self.left else ""
        else:
            eta = f"ETA {tqdm.format_interval(max(0.0, self.eta - (time.monotonic() - self.eta_at)))}"
        self.bar.set_postfix_str(eta, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.progress and self.bar.disable:  # a log file gets the final state as one line instead of frames
            tqdm.write(self.status, file=sys.stderr)
        self.bar.close()


def _drive(runner, run_one, plan, todo, done, failed, results_path, progress, describe, say, on_resume) -> None:
    """Consume the executor's events: write each finished row (here only), log failures, keep the bar current."""
    bar = _Bar(plan, todo, runner.slots, progress)
    first_row = True
    events = runner.execute(run_one, todo)
    try:
        for event in events:
            run = event.run
            if event.kind == "done":
                row = {**event.row, "threads": runner.threads}
                append_result(results_path, row)
                if first_row and on_resume is not None:
                    on_resume()
                first_row = False
                done[run.key + (run.fingerprint,)] = row
            elif event.kind in ("failed", "retry"):
                log = results_path.parent / "logs" / f"{_slug(run.key)}.log"
                log.parent.mkdir(exist_ok=True)
                log.write_text(event.log, encoding="utf-8")
                if event.kind == "failed":
                    failed.append({"key": list(run.key), "label": run.label, "log": str(log)})
            bar.update(event.kind, run, event.wall_s)
            if event.kind == "done" and describe is not None:
                say(describe(run, done[run.key + (run.fingerprint,)]))
            elif event.kind == "retry":
                say(f"  {run.label}: its worker died; running it once more (log: {log})")
            elif event.kind == "failed":
                say(f"  {run.label}: FAILED (log: {log}); the other runs go on")
    except KeyboardInterrupt:
        events.close()  # stops the workers before the message, so nothing runs on after it
        bar.close()
        say(f"stopped: {bar.finished} of {len(plan)} runs are finished and kept in {results_path}; the runs in "
            f"flight were dropped. Run the same command again to resume.")
        raise
    finally:
        events.close()
        bar.close()


def _slug(key: tuple) -> str:
    """A file name for a run's key, e.g. ("mlm", "lora", "100", 0) -> "mlm_lora_100_0"."""
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in str(k)) for k in key)
