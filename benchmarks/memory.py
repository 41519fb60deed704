"""Memory over a long pretraining run: resident set size sampled after every step, growth after warm-up.

Each precision runs in a child process of its own (so one run's allocations do not hide in another's), through
the real `pretrain()` with an `RSSMonitor` callback, and the parent prints one row per run:

    RSS at the end of warm-up, at the end, the growth (peak of the second half of the post-warm-up steps minus
    the peak of the first half), and MiB per 1000 steps over the post-warm-up stretch.

    python benchmarks/memory.py                                     # tiny, 2000 steps, fp32 and bf16
    python benchmarks/memory.py --model mini --steps 5000 --precisions bf16 --corpus runs/real2/corpus
    python benchmarks/memory.py --steps 60 --warmup 20              # a smoke run (seconds)

Without --corpus a small corpus of random sentences is made in a temporary directory (tokenizer + shards), so
the script needs nothing but the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

_WORDS = ("the a cat dog bird sat ran flew on under over mat tree sky house big small red blue green quickly "
          "slowly and then it was very happy sad").split()


def make_corpus(directory: Path) -> Path:
    """A few thousand random sentences -> tokenizer -> prepared corpus under ``directory``."""
    from transferlab.data.corpus import prepare_corpus
    from transferlab.tokenization import Tokenizer

    rng = random.Random(0)
    text = directory / "text.txt"
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 20))) + " ." for _ in range(20000)]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.train([text], kind="wordpiece", vocab_size=200, progress=False)
    return prepare_corpus([text], tokenizer, directory / "corpus", heldout_fraction=0.02, progress=False)


def child(spec: dict) -> dict:
    import torch

    from transferlab.training.memory import RSSMonitor
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(spec["threads"])
    monitor = RSSMonitor()
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(corpus=spec["corpus"], out=str(Path(out) / "run"), objective=spec["objective"],
                             model=spec["model"], seq_len=spec["seq_len"], batch_size=spec["batch_size"],
                             steps=spec["steps"], precision=spec["precision"], eval_every=10**9, eval_batches=1,
                             log_every=max(1, spec["steps"] // 10), progress=False,
                             optimizer="adamw", schedule="linear")  # like the peer's optimizer state
        pretrain(cfg, callbacks=[monitor])
    warm = [rss for step, rss in monitor.samples if step <= spec["warmup"]][-1]
    end = monitor.samples[-1][1]
    span = max(1, spec["steps"] - spec["warmup"])
    return {"precision": spec["precision"], "rss_warm_mib": warm / 2**20, "rss_end_mib": end / 2**20,
            "growth_mib": monitor.growth(spec["warmup"]) / 2**20,
            "mib_per_1k_steps": (end - warm) / 2**20 / span * 1000,
            "curve_mib": [round(r / 2**20, 1) for _, r in monitor.samples[:: max(1, spec["steps"] // 20)]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--objective", default="mlm")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200, help="steps before growth is measured")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--corpus", help="a prepared corpus (default: a small random one made on the fly)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if a.warmup >= a.steps - 4:
        p.error("--warmup must leave at least 4 steps to measure")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = a.corpus or str(make_corpus(Path(tmp)))
        print(f"{a.model} {a.objective}, {a.steps} steps of {a.batch_size}x{a.seq_len}, {a.threads} thread(s), "
              f"growth measured after step {a.warmup}")
        print(f"{'precision':<10}{'RSS warm MiB':>14}{'RSS end MiB':>13}{'growth MiB':>12}{'MiB/1k steps':>14}")
        for precision in a.precisions.split(","):
            spec = dict(model=a.model, objective=a.objective, steps=a.steps, warmup=a.warmup, seq_len=a.seq_len,
                        batch_size=a.batch_size, precision=precision, threads=a.threads, corpus=corpus)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                print(f"{precision:<10} failed:\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{precision:<10}{r['rss_warm_mib']:>14.1f}{r['rss_end_mib']:>13.1f}{r['growth_mib']:>12.2f}"
                  f"{r['mib_per_1k_steps']:>14.2f}")
            print(f"{'':<10}curve (MiB): {r['curve_mib']}")


if __name__ == "__main__":
    main()
