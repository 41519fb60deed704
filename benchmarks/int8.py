"""int8 export of a fine-tuned classifier: the accuracy it changes on a labeled set and the latency it buys.

Exports the model with ``transferlab.transfer.export.export_int8`` (to a temporary directory, loaded back the way
`transferlab evaluate` loads it), then runs the same encoded examples through three configurations:

  fp32   the fine-tuned model in fp32
  auto   the fine-tuned model as `evaluate`/`predict` run it by default (bf16 autocast for batches of 4 or more
         where the CPU has bf16 units, fp32 one example at a time)
  int8   the export (dynamic int8 Linear layers, fp32 around them)

and prints accuracy (and its change against fp32), milliseconds per batch at batch 1 and batch 32, and the size of
model.safetensors.

    python benchmarks/int8.py --model runs/x/ft/final --data ../shared/data/sst2/dev.tsv --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.evaluation.predict import predict_logits  # noqa: E402
from transferlab.transfer import load  # noqa: E402
from transferlab.transfer.export import export_int8  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: one thread's time on a shared machine


def time_batches(module, examples, batch_size: int, precision: str, clock, reps: int = 1) -> tuple[float, object]:
    """Milliseconds per batch over ``examples`` (after one warm-up batch), and the logits of the last pass."""
    predict_logits(module, examples.subset(range(min(batch_size, len(examples)))), batch_size, precision)
    t0 = clock()
    for _ in range(reps):
        logits = predict_logits(module, examples, batch_size, precision)
    batches = reps * -(-len(examples) // batch_size)
    return 1000 * (clock() - t0) / batches, logits


def run(model_dir: str, data_path: str, b1_examples: int, clock_name: str) -> list[dict]:
    clock = CLOCKS[clock_name]
    fp32 = load(model_dir)
    fp32.module.eval()
    data = fp32.read(data_path, "dev", require_labels=True)
    examples = fp32._encode(data)
    labels = torch.as_tensor(examples.labels)
    with tempfile.TemporaryDirectory() as tmp:
        out = export_int8(model_dir, Path(tmp) / "int8")
        int8 = load(out)
        sizes = {"fp32": (Path(model_dir) / "model.safetensors").stat().st_size,
                 "int8": (out / "model.safetensors").stat().st_size}
        rows = []
        for name, model, precision in (("fp32", fp32, "fp32"), ("auto", fp32, "auto"), ("int8", int8, "fp32")):
            b32_ms, logits = time_batches(model.module, examples, 32, precision, clock)
            b1_ms, _ = time_batches(model.module, examples.subset(range(min(b1_examples, len(examples)))), 1,
                                    precision, clock)
            rows.append({"config": name, "accuracy": float((logits.argmax(-1) == labels).float().mean()),
                         "batch1_ms": b1_ms, "batch32_ms": b32_ms, "logits": logits,
                         "model_mb": sizes["int8" if name == "int8" else "fp32"] / 2**20})
    base = rows[0]
    for r in rows:
        r["accuracy_change"] = r["accuracy"] - base["accuracy"]
        r["max_logit_diff_vs_fp32"] = float((r.pop("logits") - base["logits"]).abs().max()) if r is not base else 0.0
    base.pop("logits")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a fine-tuned classifier (RUN/final)")
    p.add_argument("--data", required=True, help="a labeled file or GLUE directory (its dev split)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    p.add_argument("--b1-examples", type=int, default=200, help="examples timed one at a time")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    if a.clock == "cpu" and a.threads != 1:
        p.error("--clock cpu counts one thread's time; pass --threads 1 with it")
    torch.set_num_threads(a.threads)
    rows = run(a.model, a.data, a.b1_examples, a.clock)
    print(f"# {a.model} on {a.data}; torch {torch.__version__}, {a.threads} threads, {a.clock} clock")
    print(f"{'config':<6} {'accuracy':>8} {'change':>7} {'max |dlogit|':>12} {'b1 ms':>7} {'b32 ms':>8} "
          f"{'b1 speed-up':>11} {'b32 speed-up':>12} {'MB':>6}")
    for r in rows:
        print(f"{r['config']:<6} {r['accuracy']:8.4f} {r['accuracy_change']:+7.4f} {r['max_logit_diff_vs_fp32']:12.4f} "
              f"{r['batch1_ms']:7.2f} {r['batch32_ms']:8.1f} {rows[0]['batch1_ms'] / r['batch1_ms']:10.2f}x "
              f"{rows[0]['batch32_ms'] / r['batch32_ms']:11.2f}x {r['model_mb']:6.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
