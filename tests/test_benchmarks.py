"""The benchmarks run every configuration on both sides (tiny configurations: smoke tests, not timings)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throughput = _load("throughput")
images = _load("images")


@pytest.mark.parametrize("workload", throughput.WORKLOADS)
def test_every_workload_runs_on_both_sides(workload):
    pytest.importorskip("transformers")
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


@pytest.mark.parametrize("mode", [[], ["--lockstep"]], ids=["one-by-one", "lockstep"])
def test_image_benchmark_reports_every_configuration(tmp_path, mode):
    out = tmp_path / "images.json"
    images.main(["--models", "resnet-tiny,vit-tiny", "--batch-size", "8", "--steps", "2", "--b1-images", "2",
                 "--threads", "1", "--matmul-size", "128", "--in-process", "--json", str(out), *mode])
    report = json.loads(out.read_text())
    for task, configs in (("train", images.train_configs(["default", "fused"])), ("infer", images.infer_configs())):
        for model in ("resnet-tiny", "vit-tiny"):
            rows = report[task][model]["rows"]
            assert [r["config"] for r in rows] == configs
            names = [r["name"] for r in rows]
            assert names[0].startswith("ours") and report[task][model]["best_plain"] in names[1:]
            for r in rows:
                assert r["images_per_s"] > 0 and r["mfu"] > 0 and r["peak_rss_mb"] > 0
                assert r["ratio_vs_plain_fp32"] > 0 and r["ratio_vs_best_plain"] > 0
            if task == "train":
                # same weights, same batches: every configuration trains the same (fp32 vs bf16 rounding apart)
                ours = rows[0]["losses"]
                assert len(ours) == images.WARMUP + 2 and all(math.isfinite(x) for x in ours)
                for r in rows[1:]:
                    assert r["losses"] == pytest.approx(ours, abs=0.02), r["name"]
            else:
                assert all(r["batch1_images_per_s"] > 0 for r in rows)
                assert all(r["logits_max_diff_vs_plain_fp32"] < 0.05 for r in rows)
