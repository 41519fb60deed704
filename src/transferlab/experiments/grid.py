"""The grid runner: a list of independent runs, each a pure function of its settings, run (or resumed) with its
results appended to ``results.jsonl``. It knows nothing about modalities, models or methods — a run is anything
with a ``key`` (its place in the grid), a ``fingerprint`` (a hash of everything that decides its result), a
``cost()`` estimate for the ETA and a ``label`` for the progress line; ``run_one(run) -> dict`` does the work.

A finished run's row is there when a grid is started again with the same settings (same key and fingerprint), so
it is not run again: an interrupted grid resumes where it stopped. A row is written only when its run has finished
(fsynced), so an interrupted run simply starts over; a torn last line from a crash is dropped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..fsutil import write_text

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
             on_resume: Callable[[], None] | None = None) -> dict:
    """Run every run of ``plan`` whose row is not in ``results_path`` yet.

    Args:
        plan: the runs, in the order to run them.
        run_one: run -> its results row (must hold the run's ``fingerprint``).
        results_path: the results.jsonl to read and append to.
        row_key: a stored row -> the ``run.key`` it belongs to.
        describe: (run, row) -> the line printed when it finishes.
        on_resume: called once, when the first new row has been written (e.g. to remove a report the new rows
            outdate): until then, the output is exactly as it was, whatever happens to the first run.
    Returns:
        {"rows": the rows of ``plan`` in plan order, "ran": runs done now, "skipped": runs found finished}.
    """
    done = {row_key(row) + (row["fingerprint"],): row for row in read_results(results_path)}
    todo = [r for r in plan if r.key + (r.fingerprint,) not in done]
    pending = {id(r) for r in todo}
    ignored = len(done) - (len(plan) - len(todo))
    say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if progress else (lambda msg: None)
    if done:
        say(f"resuming {results_path.parent}: {len(plan) - len(todo)} of {len(plan)} runs already finished"
            + (f"; {ignored} rows from other settings are kept in {results_path.name} but left out" if ignored
               else ""))
    # The bar advances by estimated cost, so the ETA weighs a 67k-example run above a 100-example one. Without a
    # terminal (a log file) tqdm draws nothing (disable=None): its carriage-return frames would make one unreadable
    # line; the line printed per finished run is the log.
    bar = tqdm(total=sum(r.cost() for r in plan), initial=sum(r.cost() for r in plan if id(r) not in pending),
               disable=None if progress else True, file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
    finished = len(plan) - len(todo)
    for run in todo:
        bar.set_description_str(f"runs {finished}/{len(plan)} (now {run.label})")
        row = run_one(run)
        append_result(results_path, row)
        if finished == len(plan) - len(todo) and on_resume is not None:
            on_resume()
        done[run.key + (run.fingerprint,)] = row
        finished += 1
        bar.update(run.cost())
        if describe is not None:
            say(describe(run, row))
    bar.set_description_str(f"runs {finished}/{len(plan)}")
    bar.close()
    return {"rows": [done[r.key + (r.fingerprint,)] for r in plan], "ran": len(todo),
            "skipped": len(plan) - len(todo)}
