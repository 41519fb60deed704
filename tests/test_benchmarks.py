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


_ssl_spec = importlib.util.spec_from_file_location(
    "self_supervised", Path(__file__).parents[1] / "benchmarks" / "self_supervised.py")
self_supervised = importlib.util.module_from_spec(_ssl_spec)
_ssl_spec.loader.exec_module(self_supervised)


def test_self_supervised_benchmark_runs_every_method_on_every_side():
    """SimCLR, BYOL and MAE, ours and the plain steps (and MAE encoding all patches): a smoke test, not a timing."""
    rows = self_supervised.bench(["simclr", "byol", "mae"], batch_size=4, steps=1, resnet="resnet-tiny",
                                 vit="vit-tiny", threads=1)
    sides = {(r["method"], r["side"]) for r in rows}
    assert {("simclr", "plain fp32"), ("byol", "plain bf16"),
            ("mae", "plain fp32 (encoder reads all patches)")} <= sides
    assert all(any(s.startswith("ours") for m, s in sides if m == method) for method in ("simclr", "byol", "mae"))
    for method in ("simclr", "byol", "mae"):
        mine = [r for r in rows if r["method"] == method]
        assert len(mine) == (5 if method == "mae" else 3)
        assert all(r["images_per_s"] > 0 and math.isfinite(r["loss"]) for r in mine)
        # same initial weights and batches: the first losses of every side agree (bf16 rounding aside)
        first = [r["losses"][0] for r in mine if not r["variant"] == "all"]
        assert max(first) - min(first) < 0.05 * abs(first[0]) + 0.02, (method, first)
    assert "MAE encoding only the visible patches" in self_supervised.table(rows)
