"""How much faster does a compare grid finish with worker processes or Ray, and what does each executor cost per
run? Times the same small real grid (SST-2, a tiny masked-LM checkpoint pretrained here on SST-2's own sentences)
as a user runs it: `transferlab compare SPEC --workers N --threads T [--executor ray]`, one fresh command per
executor, wall time from start to exit (imports, reading the data, worker start-up and the report included).

    python benchmarks/grid_executors.py --work /tmp/gridbench                    # all executors
    python benchmarks/grid_executors.py --work /tmp/gridbench --modes seq,pool   # without Ray

Prints per executor: wall time, the speed-up over the sequential grid, the overhead per run (slot-seconds not spent
inside a run: (wall x runs at a time - sum of the runs' own times) / runs), the peak memory of the largest process,
and whether the rows equal the sequential rows at the same thread count. Also what a worker pays to get the data:
pickling the parsed spec with its data sets against re-reading them from the spec's paths (what workers do).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# (name, CLI options, runs at a time, threads per run)
MODES = {
    "seq": (["--workers", "1"], 1, None),  # today's grid: one process, torch's threads (all cores)
    "seq1": (["--workers", "1", "--threads", "1"], 1, 1),
    "pool": (["--workers", "2", "--threads", "1"], 2, 1),
    "ray": (["--executor", "ray", "--workers", "2", "--threads", "1"], 2, 1),
}


def setup(work: Path, data: Path) -> Path:
    """A tiny MLM checkpoint pretrained on SST-2's training sentences (once; reused by later invocations)."""
    final = work / "mlm" / "final"
    if final.is_dir():
        return final
    from transferlab.data.corpus import prepare_corpus
    from transferlab.recipes.pretrain import PretrainConfig, pretrain
    from transferlab.tokenization import Tokenizer

    work.mkdir(parents=True, exist_ok=True)
    lines = (data / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    text = work / "sst2_sentences.txt"
    text.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.train([text], kind="wordpiece", vocab_size=4000, progress=False)
    corpus = prepare_corpus([text], tokenizer, work / "corpus", heldout_fraction=0.02, progress=False)
    return pretrain(PretrainConfig(corpus=str(corpus), out=str(work / "mlm"), model="tiny", seq_len=64,
                                   batch_size=32, steps=150, lr=1e-3, progress=False, eval_batches=2))


def write_spec(work: Path, checkpoint: Path, data: Path) -> Path:
    spec = work / "grid.yaml"
    spec.write_text(f"""name: gridbench
checkpoints: [{checkpoint}]
task: {{train: {data / 'sst2' / 'train.tsv'}, dev: {data / 'sst2' / 'dev.tsv'}, metric: accuracy}}
methods: [scratch, finetune, linear-probe, lora, pipeline]
budgets: [100, 500]
seeds: 2
train: {{epochs: 2, min_epoch_size: 320, max_steps: 20, lr: 1e-3, batch_size: 32, max_len: 64}}
""", encoding="utf-8")
    return spec


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_mode(name: str, spec: Path, work: Path) -> dict:
    options, slots, threads = MODES[name]
    out = work / f"out-{name}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "transferlab", "compare", str(spec), "--out", str(out),
                             "--quiet", *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak = {}  # pid -> MB: the command and every process under it (its workers, Ray's)
    while proc.poll() is None:
        stack = [proc.pid]
        while stack:
            pid = stack.pop()
            peak[pid] = max(peak.get(pid, 0.0), _rss_mb(pid))
            stack += _children(pid)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    inside = sum(r["wall_s"] for r in rows)
    return {"mode": name, "wall_s": round(wall, 1), "runs": len(rows), "slots": slots,
            "threads": rows[0]["threads"], "run_s_sum": round(inside, 1),
            "overhead_per_run_s": round((wall * slots - inside) / len(rows), 2),
            "peak_process_mb": round(max(peak.values(), default=0.0)),
            "rows": {json.dumps(r["fingerprint"]): {k: v for k, v in r.items() if k != "wall_s"} for r in rows}}


def data_cost(spec_path: Path) -> dict:
    """Pickling the parsed spec with its data sets against a worker re-reading them from the spec's paths."""
    from transferlab.experiments import compare

    spec = compare.CompareSpec.parse(spec_path)
    t = time.perf_counter()
    full = pickle.dumps(spec)
    pickle.loads(full)
    full_s = time.perf_counter() - t
    light = pickle.dumps(compare.CompareWork(spec))
    worker = pickle.loads(light)
    compare._WORKER_DATA.clear()
    t = time.perf_counter()
    worker._spec_with_data()
    reread_s = time.perf_counter() - t
    return {"spec_with_data_bytes": len(full), "pickle_round_trip_s": round(full_s, 3),
            "work_without_data_bytes": len(light), "worker_reread_s": round(reread_s, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/gridbench", help="where the checkpoint and the grids go")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the folder holding sst2/")
    p.add_argument("--modes", default="seq,seq1,pool,ray", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    work, data = Path(a.work).resolve(), Path(a.data).resolve()
    spec = write_spec(work, setup(work, data), data)
    results = [run_mode(name, spec, work) for name in a.modes.split(",")]
    base = next((r for r in results if r["mode"] == "seq"), results[0])
    print("| executor | runs at a time x threads | wall s | speed-up | overhead per run s | largest process MB | "
          "rows = sequential rows at the same threads |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in results:
        seq = next((s for s in results if s["mode"].startswith("seq") and s["threads"] == r["threads"]), None)
        identical = "-" if seq is None or seq is r else ("yes" if seq["rows"] == r["rows"] else "NO")
        print(f"| {r['mode']} | {r['slots']} x {r['threads']} | {r['wall_s']} | "
              f"{base['wall_s'] / r['wall_s']:.2f}x | {r['overhead_per_run_s']} | {r['peak_process_mb']} | "
              f"{identical} |")
    cost = data_cost(spec)
    print(json.dumps(cost))
    if a.json:
        Path(a.json).write_text(json.dumps({"modes": [{k: v for k, v in r.items() if k != "rows"} for r in results],
                                            "data_cost": cost}, indent=2))


if __name__ == "__main__":
    main()
