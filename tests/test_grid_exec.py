"""Grids on every core and every machine: worker processes and Ray give the rows of the sequential grid; a worker
that dies costs only its own run (retried once, else reported with its log) and the grid resumes; Ctrl-C stops
the workers and the next invocation resumes; bad executor settings are refused before any run starts."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from transferlab.errors import UserError
from transferlab.experiments.executors import ExecutorConfig, LocalPool, Sequential, check_readable
from transferlab.experiments.grid import run_grid

SRC = str(Path(__file__).resolve().parents[1] / "src")
RESULTS = "results.jsonl"


def run_compare(*args, **kwargs):
    # Imported here: worker processes import this module for the toy grid, which must not load torch.
    from transferlab.experiments.compare import run_compare

    return run_compare(*args, **kwargs)


def main(argv):
    from transferlab.cli import main

    return main(argv)


def write_spec(path: Path, checkpoint, train, dev) -> Path:
    path.write_text(f"""name: exec
checkpoints: [{checkpoint}]
task: {{train: {train}, dev: {dev}, metric: accuracy}}
methods: [scratch, finetune, pipeline]
budgets: [20, 40]
seeds: 1
train: {{epochs: 1, min_epoch_size: 32, max_steps: 2, lr: 1e-3, batch_size: 16, max_len: 32}}
""", encoding="utf-8")
    return path


def rows_without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.fixture(scope="module")
def spec(tmp_path_factory, pretrained_dir, labeled_files) -> Path:
    return write_spec(tmp_path_factory.mktemp("exec") / "spec.yaml", pretrained_dir, *labeled_files)


@pytest.fixture(scope="module")
def sequential(spec):
    result = run_compare(spec, spec.parent / "sequential", progress=False,
                         executor=ExecutorConfig(workers=1, threads=1))
    return spec, result["rows"]


def test_worker_processes_give_the_rows_of_the_sequential_grid(sequential, tmp_path, capsys):
    spec, rows = sequential
    assert len(rows) == 6 and all(r["threads"] == 1 for r in rows)
    result = run_compare(spec, tmp_path / "pool", executor=ExecutorConfig(workers=2, threads=1))
    assert result["ran"] == 6
    # Same seeds and thread count: the same numbers to the last digit, in the same (plan) order.
    assert rows_without_times(result["rows"]) == rows_without_times(rows)
    written = [json.loads(line) for line in (tmp_path / "pool" / RESULTS).read_text().splitlines()]
    assert sorted(map(json.dumps, rows_without_times(written))) == sorted(map(json.dumps, rows_without_times(rows)))
    assert (tmp_path / "pool" / "report.md").is_file()
    err = capsys.readouterr().err
    assert "6 runs: 2 worker processes on this machine x 1 thread" in err and "runs 6/6, 0 running" in err


# ---------------------------------------------------------------------------------------------- a toy grid


@dataclass
class Toy:
    """A run of a toy grid; picklable, so worker processes can take it."""

    n: int
    fingerprint: str = "f"

    @property
    def key(self) -> tuple:
        return ("toy", self.n)

    @property
    def label(self) -> str:
        return f"toy {self.n}"

    def cost(self) -> float:
        return 1.0


class ToyWork:
    """A seeded computation; the run numbered ``victim`` SIGKILLs its own worker on its first ``deaths`` attempts.
    Each call leaves a file ``pid-N`` (its worker) in ``scratch``; ``sleep`` makes runs last."""

    def __init__(self, scratch: Path, victim: int = -1, deaths: int = 0, sleep: float = 0.0):
        self.scratch, self.victim, self.deaths, self.sleep = scratch, victim, deaths, sleep

    def __call__(self, run: Toy) -> dict:
        import random

        (self.scratch / f"pid-{run.n}").write_text(str(os.getpid()))
        if run.n == self.victim:
            attempts = self.scratch / "attempts"
            tried = len(attempts.read_text()) if attempts.exists() else 0
            attempts.write_text("x" * (tried + 1))
            if tried < self.deaths:
                print(f"toy {run.n} going down", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep)
        return {"n": run.n, "value": random.Random(run.n).random(), "fingerprint": run.fingerprint}


def toy_grid(out: Path, work: ToyWork, executor: ExecutorConfig | None, n: int = 4) -> dict:
    return run_grid([Toy(i) for i in range(n)], work, out / "results.jsonl", row_key=lambda r: ("toy", r["n"]),
                    progress=True, executor=executor)


def test_a_killed_worker_costs_only_its_run_which_is_retried_once(tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    result = toy_grid(out, ToyWork(tmp_path, victim=1, deaths=1), ExecutorConfig(workers=2, threads=1))
    assert (result["ran"], result["failed"]) == (4, [])
    assert [r["n"] for r in result["rows"]] == [0, 1, 2, 3]
    (tmp_path / "seq").mkdir()
    reference = toy_grid(tmp_path / "seq", ToyWork(tmp_path), None)
    assert [r["value"] for r in result["rows"]] == [r["value"] for r in reference["rows"]]
    err = capsys.readouterr().err
    assert "toy 1: its worker died; running it once more" in err
    log = (out / "logs" / "toy_1.log").read_text()
    assert "was killed by SIGKILL" in log and "toy 1 going down" in log


def test_a_run_whose_worker_dies_twice_fails_alone_and_the_grid_resumes(tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    result = toy_grid(out, ToyWork(tmp_path, victim=2, deaths=2), ExecutorConfig(workers=2, threads=1))
    assert result["ran"] == 3 and [r["n"] for r in result["rows"]] == [0, 1, 3]
    [failed] = result["failed"]
    assert failed["label"] == "toy 2" and "its worker died both times" in Path(failed["log"]).read_text()
    assert "toy 2: FAILED" in capsys.readouterr().err
    # The next invocation runs only what is missing.
    again = toy_grid(out, ToyWork(tmp_path), ExecutorConfig(workers=2, threads=1))
    assert (again["ran"], again["skipped"], again["failed"]) == (1, 3, [])
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_an_exception_fails_its_run_with_the_traceback_and_a_user_mistake_stops_the_grid(tmp_path):
    class Broken(ToyWork):  # local: runs in this process only
        def __call__(self, run):
            if run.n == 1:
                raise ValueError("a bug in run 1")
            if run.n == 3:
                raise UserError("a mistake every run shares")
            return super().__call__(run)

    result = toy_grid(tmp_path, Broken(tmp_path), ExecutorConfig(workers=1), n=3)
    assert result["ran"] == 2 and "ValueError: a bug in run 1" in Path(result["failed"][0]["log"]).read_text()
    with pytest.raises(UserError, match="toy 3: a mistake every run shares"):
        toy_grid(tmp_path, Broken(tmp_path), None, n=4)


DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_grid_exec import ToyWork, toy_grid
from transferlab.cli import main
from transferlab.experiments.executors import ExecutorConfig
if __name__ == "__main__":
    try:
        toy_grid(Path({out!r}), ToyWork(Path({scratch!r}), sleep={sleep}), ExecutorConfig(workers=2, threads=1),
                 n=6)
    except KeyboardInterrupt:
        sys.exit(130)
"""


def test_ctrl_c_stops_the_workers_and_the_next_invocation_resumes(tmp_path):
    out = tmp_path / "grid"
    out.mkdir()
    script = tmp_path / "driver.py"
    # runs long enough that the interrupt lands mid-grid even when the suite's other work slows the polling
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent), out=str(out), scratch=str(tmp_path),
                                    sleep=4.0))
    env = {**os.environ, "PYTHONPATH": SRC}
    # Its own process group, like a terminal's: Ctrl-C reaches the driver and its workers alike.
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while not (results.exists() and results.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped:" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    finished = len(results.read_text().splitlines())
    assert 1 <= finished < 6
    workers = {pid.read_text() for pid in tmp_path.glob("pid-*")}
    assert workers and not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "no worker outlives the driver"
    again = toy_grid(out, ToyWork(tmp_path), ExecutorConfig(workers=2, threads=1), n=6)
    assert (again["ran"], again["skipped"]) == (6 - finished, finished)


# ---------------------------------------------------------------------------------------------- Ray


def test_ray_runs_a_tiny_grid_on_a_local_ray_with_the_sequential_rows(sequential, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError as e:
        reason = f"Ray is not installed here ({e}); `pip install ray` to test --executor ray"
        warnings.warn(reason)  # shown in the summary even without -rs: the Ray path went untested
        pytest.skip(reason)
    spec, rows = sequential
    result = run_compare(spec, tmp_path / "ray", progress=False,
                         executor=ExecutorConfig(executor="ray", threads=1))
    assert result["ran"] == 6
    assert rows_without_times(result["rows"]) == rows_without_times(rows)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_executor_settings_are_refused_with_the_option_and_the_fix(spec, tmp_path, capsys):
    for kwargs, needle in (({"workers": 0}, "--workers 0: a grid needs at least one worker"),
                           ({"workers": "two"}, "--workers 'two' is neither"),
                           ({"threads": 0}, "--threads 0"),
                           ({"executor": "slurm"}, "--executor 'slurm'"),
                           ({"address": "10.0.0.5:6379"}, "Add --executor ray"),
                           ({"executor": "ray", "address": "headnode"}, "is not HOST:PORT")):
        with pytest.raises(UserError, match=needle):
            ExecutorConfig(**kwargs)
    # from the command line: exit 2, one paragraph, nothing written
    assert main(["compare", str(spec), "--out", str(tmp_path / "zero"), "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err and not (tmp_path / "zero").exists()


def test_more_workers_than_runs_start_one_per_run_and_say_so():
    pool, notes = ExecutorConfig(workers=8, threads=1).build(3)
    assert isinstance(pool, LocalPool) and pool.workers == 3
    assert notes[0] == "--workers 8 but only 3 runs are left: starting 3."
    one, notes = ExecutorConfig(workers=4).build(1)
    assert isinstance(one, Sequential) and "only 1 run is left" in notes[0]
    auto, _ = ExecutorConfig().build(100)
    assert auto.slots * auto.threads <= max(os.cpu_count(), len(os.sched_getaffinity(0)))


def test_an_unreachable_ray_address_is_refused_before_any_run(spec, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed; the address check needs it")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    assert main(["compare", str(spec), "--out", str(tmp_path / "ray"), "--executor", "ray", "--address",
                 f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach a Ray cluster at --address 127.0.0.1:{port}" in err and "Nothing has run yet" in err
    assert time.time() - start < 30 and not (tmp_path / "ray" / RESULTS).exists()


def test_paths_a_worker_cannot_read_are_named_before_any_run(tmp_path):
    readable = tmp_path / "train.tsv"
    readable.write_text("x\n")
    assert check_readable([str(readable), str(tmp_path)]) == []
    missing = str(tmp_path / "moved" / "dev.tsv")
    assert check_readable([str(readable), missing]) == [missing]
    with pytest.raises(UserError, match="this machine cannot read '.*dev.tsv'.*Nothing has run yet"):
        LocalPool(2, 1).check([str(readable), missing])
