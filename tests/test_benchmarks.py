"""The throughput benchmark runs every workload on both sides (a tiny configuration: a smoke test, not a timing)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")
_spec = importlib.util.spec_from_file_location("throughput", Path(__file__).parents[1] / "benchmarks" / "throughput.py")
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)


@pytest.mark.parametrize("workload", throughput.WORKLOADS)
def test_every_workload_runs_on_both_sides(workload):
    rows = [throughput.child(dict(model="tiny", workload=workload, side=side, precision="fp32", compile=False,
                                  steps=1, batch_size=4, seq_len=32, vocab_size=500, corpus=None, threads=1,
                                  dropout=0.0))
            for side in ("transferlab", "transformers")]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["flops_per_token"] > 0 and row["peak_rss_mb"] > 0
    if workload != "infer":
        ours, theirs = (r["losses"] for r in rows)
        assert len(ours) == len(theirs) == 1 + throughput.WARMUP
        # same batches, same architecture, different random weights: both start at about ln(number of outputs)
        outputs = 2 if workload == "finetune" else 500
        assert all(abs(loss[0] - math.log(outputs)) < 1.0 for loss in (ours, theirs))
        assert all(math.isfinite(x) for x in ours + theirs)
