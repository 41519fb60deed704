"""Where a grid's runs execute: one after another in this process (``Sequential``), in a pool of worker processes
on this machine (``LocalPool``), or as Ray tasks on a cluster (``RayExecutor``). ``grid.run_grid`` drives all three
the same way and is the only writer of results; an executor runs ``work(run)`` somewhere and reports what happened
as a stream of ``Event``s.

Why a pool of our own instead of ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies (the
kernel's out-of-memory killer, a crash in native code) the whole pool is marked broken and every run in flight is
lost, and ``multiprocessing.Pool`` never returns the dead worker's task at all. Here a dead worker costs only its own
run, which is retried once on a fresh worker and otherwise reported as failed with its output. Across machines
nothing here schedules: runs are Ray tasks, and Ray retries a task whose worker died (``max_retries=1``).

Reproducibility: a run's numbers depend on its seed and on its thread count, because a parallel reduction sums in an
order that depends on how many threads share it (measured on a tiny model: the losses of 1 and 2 threads differ
in the fifth digit). Every executor therefore sets the thread count before each run, and the same ``threads`` gives
the same rows to the last digit whichever executor ran them; each row records its thread count.

A worker needs ``work`` and the runs to be picklable. Workers are separate processes started with ``spawn`` (a
fork of a process whose OpenMP threads are running can hang), so they import transferlab afresh: the paths a
worker reads must be absolute or resolved by ``work`` itself, and on a cluster they must exist on every node.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import UserError
from ..options import Settings, option

EXECUTORS = ("local", "ray")
# A worker holds torch, the data sets and one model: 0.6-0.76 GB resident per process on the SST-2 grid of
# benchmarks/grid_executors.py (docs/performance.md), with headroom for larger models and image sets. "auto" starts
# no more workers than the available memory holds at this much each.
WORKER_MEMORY = 1.5 * 2**30
LOG_TAIL = 20_000  # characters of a failed run's output kept in its log
RAY_CONNECT_TIMEOUT = 5.0  # seconds to reach a Ray address before saying it cannot be reached


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a batch scheduler)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available for new processes (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass
class Event:
    """What an executor reports: a run started, finished (``row``), failed (``log``), will be retried (``log``),
    or nothing happened for a while (``tick``: time to refresh the progress bar)."""

    kind: str  # "start", "done", "failed", "retry", "tick"
    run: object = None
    row: dict | None = None
    log: str = ""
    wall_s: float = 0.0


@dataclass(kw_only=True)
class ExecutorConfig(Settings):
    """How a grid's runs execute. Build the executor with ``build(n_runs)``.

    Every field is a command-line option of compare and icl-scaling (``cli_args.add_settings``), declared here once.
    ``executor="ray"`` without ``address`` starts a local Ray in this process, to try it on one machine. With Ray,
    ``workers`` is the most runs in flight at once ("auto": the cluster's CPUs divided by ``threads``). Rows are
    identical across executors at the same thread count (see the module docstring).
    """

    section = "where the runs execute"
    executor: str = option("local", "local: worker processes on this machine; ray: Ray tasks on a cluster",
                           choices=EXECUTORS)
    workers: int | str = option("auto", "runs at a time: N worker processes on this machine (1: one after another "
                                        "in this process), or with --executor ray the most runs in flight; auto: as "
                                        "many as the cores and memory allow, at most the runs left", metavar="N")
    threads: int | None = option(None, "torch threads per run; rows are identical across executors at the same "
                                       "thread count", default_text="the cores divided among the workers; 1 with Ray")
    address: str | None = option(None, "with --executor ray: the cluster's HOST:PORT (`ray start --head` prints "
                                       "it), ray://HOST:PORT or auto; every node must see the data and checkpoints "
                                       "at the same paths", default_text="start a local Ray in this process",
                                 metavar="HOST:PORT")

    def check(self):
        # The sentences say what each value means and how to fix it, so they are written here rather than derived
        # from ranges; the declarations above give the types, choices and help.
        if isinstance(self.workers, str) and self.workers != "auto":
            try:
                self.workers = int(self.workers)
            except ValueError:
                raise UserError(f"--workers '{self.workers}' is neither a number of workers nor 'auto'. Give a "
                                f"whole number (e.g. --workers 2), or leave it out for as many as the cores "
                                f"allow.") from None
        if self.workers != "auto" and (isinstance(self.workers, bool) or self.workers < 1):
            raise UserError(f"--workers {self.workers}: a grid needs at least one worker. Use --workers 1 to run "
                            f"one run at a time in this process, or leave --workers out for as many as the cores "
                            f"allow ({usable_cores()} here).")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: each run needs at least one thread; give a whole number, "
                            f"or leave it out to share the cores among the workers.")
        if self.address is not None and self.executor != "ray":
            raise UserError(f"--address {self.address} names a Ray cluster, but the executor is "
                            f"'{self.executor}'. Add --executor ray, or drop --address to run on this machine.")
        if self.address is not None and self.address != "auto":
            _split_address(self.address)

    def build(self, n_runs: int) -> tuple["Sequential | LocalPool | RayExecutor", list[str]]:
        """The executor for ``n_runs`` runs, and notes for the user about what was chosen (a worker count cut to
        the runs left, more threads than cores)."""
        notes = []
        if self.executor == "ray":
            workers = None if self.workers == "auto" else self.workers
            if workers is not None and n_runs and workers > n_runs:
                notes.append(f"--workers {workers} but only {n_runs} run{'s are' if n_runs > 1 else ' is'} left: "
                             f"at most {n_runs} at a time.")
                workers = n_runs
            return RayExecutor(self.address, workers, self.threads or 1), notes
        cores = usable_cores()
        if self.workers == "auto":
            workers = max(1, min(cores, n_runs))
            memory = available_memory()
            if memory is not None and workers > 1 and memory < workers * WORKER_MEMORY:
                fits = max(1, int(memory // WORKER_MEMORY))
                notes.append(f"{memory / 2**30:.1f} GiB of memory available: {fits} worker{'s' if fits > 1 else ''} "
                             f"instead of {workers} (about {WORKER_MEMORY / 2**30:.1f} GiB each; --workers N to "
                             f"choose).")
                workers = fits
        else:
            workers = self.workers
            if n_runs and workers > n_runs:
                notes.append(f"--workers {workers} but only {n_runs} run{'s are' if n_runs > 1 else ' is'} left: "
                             f"starting {n_runs}.")
                workers = n_runs
        threads = self.threads or max(1, cores // workers)
        if workers * threads > cores:
            notes.append(f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''} "
                         f"on {cores} core{'s' if cores > 1 else ''}: the runs compete for the cores, so each is "
                         f"slower and the grid no faster. Fewer --workers or --threads fit the cores.")
        if workers == 1:
            return Sequential(threads), notes
        return LocalPool(workers, threads), notes


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address '{address}' is not HOST:PORT. Give the Ray head's address, e.g. "
                        f"--address 10.0.0.5:6379 (the port `ray start --head` printed), ray://HOST:10001 for Ray "
                        f"Client, or leave --address out to start a local Ray on this machine.")
    return host, int(port)


# ------------------------------------------------------------------------------------------------ in a worker


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(threads: int) -> None:
    """Give the next run ``threads`` threads: torch's setting once torch is loaded; before that, the environment
    it reads when it loads (so a worker whose run is not a torch one never pays for importing torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        os.environ.update({n: str(threads) for n in _THREAD_VARIABLES})


def _call(work: Callable, run, threads: int) -> tuple:
    """Run ``work(run)`` with ``threads`` threads: ("ok", row, wall_s), ("user", message, wall_s) for a user
    mistake the whole grid shares, or ("error", traceback, wall_s)."""
    set_threads(threads)
    start = time.perf_counter()
    try:
        row = work(run)
    except UserError as e:
        return "user", str(e), time.perf_counter() - start
    except Exception:  # noqa: BLE001 - reported as this run's failure; the other runs go on
        return "error", traceback.format_exc(), time.perf_counter() - start
    return "ok", row, time.perf_counter() - start


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so native code's output too) to ``path``."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w", encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text if len(text) <= LOG_TAIL else "[...]\n" + text[-LOG_TAIL:]


def _pool_worker(conn, work_bytes: bytes, threads: int, log_path: str) -> None:
    """A pool worker: load ``work`` once, then run what the driver sends until it sends None."""
    import faulthandler

    # Ctrl-C reaches every process of the terminal's group; the driver alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = Path(log_path)
    with _output_to(log):
        faulthandler.enable()  # a crash in native code leaves its Python stack in the run's log
        try:
            work = pickle.loads(work_bytes)
            set_threads(threads)
        except Exception:  # noqa: BLE001 - the driver shows it and stops
            conn.send(("startup", traceback.format_exc()))
            return
    conn.send(("ready",))
    while True:
        try:
            run = conn.recv()
        except EOFError:  # the driver is gone
            return
        if run is None:
            return
        with _output_to(log):
            result = _call(work, run, threads)
        if result[0] == "error":
            result = (result[0], result[1] + _with_output(_tail(log)), result[2])
        conn.send(result)


def _with_output(output: str) -> str:
    return f"\n--- the run's output ---\n{output}" if output.strip() else ""


# ------------------------------------------------------------------------------------------------ executors


def check_readable(paths: Sequence[str]) -> list[str]:
    """The paths of ``paths`` this process cannot read (a directory must be listable, and the files directly in
    it readable: a checkpoint's config.json and weights)."""
    bad = []
    for p in paths:
        path = Path(p)
        try:
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_file() and not os.access(child, os.R_OK):
                        bad.append(str(child))
            elif not (path.is_file() and os.access(path, os.R_OK)):
                bad.append(str(path))
        except OSError:
            bad.append(str(path))
    return bad


def _refuse_unreadable(bad: list[str], where: str) -> None:
    if bad:
        shown = ", ".join(f"'{b}'" for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(f"{where} cannot read {shown}. The workers read the data and checkpoints from the paths "
                        f"the spec names; make them readable there (a filesystem every node mounts at the same "
                        f"path, for a cluster), then run the command again. Nothing has run yet.")


def _outcome(run, status: str, payload, wall: float) -> Event:
    """The event for a worker's (status, payload, wall) answer; a user error in the run's settings is raised, since
    every other run of the grid would meet it too."""
    if status == "ok":
        return Event("done", run, row=payload, wall_s=wall)
    if status == "user":
        raise UserError(f"{run.label}: {payload}")
    return Event("failed", run, log=payload, wall_s=wall)


class _Local:
    """An executor with nothing to start or stop: entering and leaving its ``with`` block do nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Sequential(_Local):
    """One run after another in this process (what ``compare`` always did)."""

    slots = 1

    def __init__(self, threads: int):
        self.threads = threads

    def describe(self) -> str:
        return f"one at a time in this process, {self.threads} thread{'s' if self.threads > 1 else ''}"

    def check(self, paths: Sequence[str]) -> None:
        _refuse_unreadable(check_readable(paths), "this process")

    def execute(self, work: Callable, runs: list) -> Iterator[Event]:
        import torch

        previous = torch.get_num_threads()
        try:
            for run in runs:
                yield Event("start", run)
                yield _outcome(run, *_call(work, run, self.threads))
        finally:
            torch.set_num_threads(previous)


class _Worker:
    def __init__(self, ctx, work_bytes: bytes, threads: int, log: Path):
        self.conn, child = ctx.Pipe()
        self.log = log
        self.ready = False
        self.proc = ctx.Process(target=_pool_worker, args=(child, work_bytes, threads, str(log)), daemon=True)
        # Libraries read their thread counts from the environment when they load (OpenMP, OpenBLAS for the
        # pipelines' solvers); a spawned child copies this process's environment at start.
        saved = {n: os.environ.get(n) for n in _THREAD_VARIABLES}
        os.environ.update({n: str(threads) for n in _THREAD_VARIABLES})
        try:
            self.proc.start()
        finally:
            for n, v in saved.items():
                if v is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = v
        child.close()

    def receive(self):
        """The next message, or None when the worker has died."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            return None
        return None if not self.proc.is_alive() else ()

    def death(self) -> str:
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        if code is not None and code < 0:
            try:
                why = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                why = f"was killed by signal {-code}"
            if -code == signal.SIGKILL:
                why += (", which is often the kernel's out-of-memory killer: check `dmesg`, and run fewer "
                        "--workers if memory is short")
        else:
            why = f"exited with status {code}"
        return f"the worker process {why}." + _with_output(_tail(self.log))

    def ask_to_stop(self, now: bool) -> None:
        """After the run in hand (``now=False``: it is idle), or at once (SIGTERM)."""
        with contextlib.suppress(OSError, ValueError):
            if now:
                self.proc.terminate()
            else:
                self.conn.send(None)

    def wait_stopped(self) -> None:
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()

    def stop(self, now: bool) -> None:
        self.ask_to_stop(now)
        self.wait_stopped()


_NO_START = ("a worker process could not start. Workers are started with 'spawn': each imports the program that "
             "started the grid again, so a script must start it under `if __name__ == \"__main__\":`, and the "
             "run function must be importable there. Or run one at a time in this process (--workers 1). What "
             "the worker said: ")


class LocalPool(_Local):
    """``workers`` processes on this machine, each running one run at a time with ``threads`` threads."""

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self.slots = workers

    def describe(self) -> str:
        return (f"{self.workers} worker processes on this machine x {self.threads} "
                f"thread{'s' if self.threads > 1 else ''} ({usable_cores()} cores)")

    def check(self, paths: Sequence[str]) -> None:
        # Same machine and user as this process: what it can read, the workers can.
        _refuse_unreadable(check_readable(paths), "this machine")

    def execute(self, work: Callable, runs: list) -> Iterator[Event]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        try:
            work_bytes = pickle.dumps(work)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise UserError(f"the grid's run function cannot be sent to worker processes ({e}): it must be "
                            f"picklable, e.g. an instance of a module-level class rather than a lambda or a local "
                            f"function. Or run one at a time in this process (workers=1).") from None
        tmp = Path(tempfile.mkdtemp(prefix="transferlab-grid-"))
        queue = deque((run, 1) for run in runs)
        idle: list[_Worker] = []
        busy: dict[_Worker, tuple] = {}  # worker -> (run, attempt)
        started = 0

        def spawn() -> _Worker:
            nonlocal started
            started += 1
            return _Worker(ctx, work_bytes, self.threads, tmp / f"worker-{started}.log")

        try:
            idle.extend(spawn() for _ in range(min(self.workers, len(runs))))
            while queue or busy:
                while queue and idle:
                    worker = idle.pop()
                    run, attempt = queue.popleft()
                    try:
                        worker.conn.send(run)
                    except OSError:  # died while idle: replace it, run elsewhere
                        queue.appendleft((run, attempt))
                        worker.stop(now=True)
                        idle.append(spawn())
                        continue
                    busy[worker] = (run, attempt)
                    yield Event("start", run)
                waiting = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
                if not wait(waiting, timeout=1.0):
                    yield Event("tick")
                    continue
                for worker in list(busy):
                    message = worker.receive()
                    while message == ("ready",):
                        worker.ready = True
                        message = worker.receive()
                    if message == ():
                        continue  # alive, nothing more to read yet
                    run, attempt = busy.pop(worker)
                    if message is None or message[0] == "startup":
                        log = message[1] if message else worker.death()
                        worker.stop(now=True)
                        if not worker.ready:
                            raise UserError(_NO_START + log)
                        if attempt < 2:
                            queue.appendleft((run, attempt + 1))
                            yield Event("retry", run, log=log)
                        else:
                            yield Event("failed", run, log=f"{log}\n(the run failed twice; its worker died both "
                                                           f"times)")
                        if queue and len(idle) + len(busy) < self.workers:
                            idle.append(spawn())
                        continue
                    idle.append(worker)
                    yield _outcome(run, *message)
        finally:
            # All asked first, then all waited for: the workers wind down in parallel.
            for worker in idle:
                worker.ask_to_stop(now=False)
            for worker in busy:
                worker.ask_to_stop(now=True)
            for worker in [*idle, *busy]:
                worker.wait_stopped()
            for f in tmp.iterdir():
                f.unlink(missing_ok=True)
            tmp.rmdir()


# ------------------------------------------------------------------------------------------------ Ray


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed here: `pip install ray` (on the "
                        "driver and, with the same version, on every node of the cluster), or use "
                        "--executor local.") from None
    return ray


def _ray_task(work, run, threads: int) -> tuple:
    """One run as a Ray task: like a pool worker's, with its output captured for the log of a failed run."""
    log = Path(tempfile.mkstemp(prefix="transferlab-run-", suffix=".log")[1])
    try:
        with _output_to(log):
            result = _call(work, run, threads)
        if result[0] == "error":
            result = (result[0], result[1] + _with_output(_tail(log)), result[2])
        return result
    finally:
        log.unlink(missing_ok=True)


def _node_check(paths: list[str]) -> tuple[str, list[str]]:
    import transferlab

    return f"{socket.gethostname()} (transferlab {transferlab.__version__})", check_readable(paths)


class RayExecutor:
    """Runs as Ray tasks: each asks for ``threads`` CPUs, and Ray retries it once if its worker dies."""

    def __init__(self, address: str | None, workers: int | None, threads: int):
        self.address, self.workers, self.threads = address, workers, threads
        self.slots = workers or 1
        self.started_here = False
        self.nodes: list[dict] = []

    def __enter__(self):
        import logging

        ray = _ray()
        if self.address not in (None, "auto"):
            host, port = _split_address(self.address)
            try:
                socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT).close()
            except OSError as e:
                raise UserError(f"cannot reach a Ray cluster at --address {self.address}: "
                                f"{e.strerror or e}. Check that the cluster is up (`ray status` on its head) and "
                                f"that this machine can reach that host and port (the head's GCS port, 6379 unless "
                                f"`ray start --head --port` chose another), or leave --address out to run a "
                                f"local Ray on this machine. Nothing has run yet.") from None
        try:
            if ray.is_initialized():
                pass  # a caller's own Ray session: use it, and leave it running
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING,
                         **({"include_dashboard": False} if self.address is None else {}))
                self.started_here = True
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = "start a local Ray" if self.address is None else f"join the Ray cluster at --address {self.address}"
            raise UserError(f"could not {where}: {e}. Check that this machine runs the cluster's Ray and Python "
                            f"versions (ray {ray.__version__} here), or use --executor local. Nothing has run "
                            f"yet.") from None
        # Runs go to nodes with CPUs; the largest decides whether one run's --threads fit anywhere.
        self.nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        largest = max((int(n["Resources"]["CPU"]) for n in self.nodes), default=0)
        if self.threads > largest:
            self.__exit__(None, None, None)
            raise UserError(f"--threads {self.threads}: no node of the Ray cluster has that many CPUs (the largest "
                            f"has {largest}), so no run could start. Use fewer --threads. Nothing has run yet.")
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = self.workers or max(1, self.cpus // self.threads)
        return self

    def __exit__(self, *exc):
        if self.started_here:
            _ray().shutdown()
            self.started_here = False
        return False

    def describe(self) -> str:
        where = "a local Ray started in this process" if self.address is None else f"the Ray cluster at {self.address}"
        return (f"{where} ({len(self.nodes)} node{'s' if len(self.nodes) > 1 else ''}, {self.cpus} CPUs), up to "
                f"{self.slots} at a time x {self.threads} thread{'s' if self.threads > 1 else ''}")

    def check(self, paths: Sequence[str]) -> None:
        """Ask every node, with a task pinned to it, whether it can import transferlab and read ``paths``."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(_node_check)
        refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(list(paths)): n for n in self.nodes}
        for ref, node in refs.items():
            where = f"Ray node {node.get('NodeManagerAddress', node['NodeID'][:8])}"
            try:
                host, bad = ray.get(ref, timeout=120)
            except ray.exceptions.RayTaskError as e:
                raise UserError(f"{where} cannot run transferlab ({type(e.cause).__name__}: {e.cause}). Install "
                                f"the same transferlab on every node (or start the cluster with a runtime_env "
                                f"that provides it). Nothing has run yet.") from None
            except ray.exceptions.GetTimeoutError:
                raise UserError(f"{where} did not answer within 120 s whether it can read the grid's files; "
                                f"check the node (`ray status`). Nothing has run yet.") from None
            _refuse_unreadable(bad, f"{where} ({host})")

    def execute(self, work: Callable, runs: list) -> Iterator[Event]:
        ray = _ray()
        task = ray.remote(_ray_task).options(num_cpus=self.threads, max_retries=1, retry_exceptions=False)
        work_ref = ray.put(work)  # sent once; each task reads it from the object store
        queue = deque(runs)
        pending: dict = {}  # object ref -> run
        try:
            while queue or pending:
                while queue and len(pending) < self.slots:
                    run = queue.popleft()
                    pending[task.remote(work_ref, run, self.threads)] = run
                    yield Event("start", run)
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not finished:
                    yield Event("tick")
                    continue
                for ref in finished:
                    run = pending.pop(ref)
                    try:
                        answer = ray.get(ref)
                    except ray.exceptions.RayError as e:  # its worker or node died twice, or Ray gave up on it
                        yield Event("failed", run, log=f"Ray could not finish this run (after one retry): {e}")
                        continue
                    yield _outcome(run, *answer)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
