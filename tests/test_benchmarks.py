"""The benchmarks run every configuration on both sides (tiny configurations: smoke tests, not timings)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


throughput = _load("throughput")
images = _load("images")
self_supervised = _load("self_supervised")
time_to_quality = _load("time_to_quality")


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


@pytest.mark.parametrize("workload", ["finetune", "infer"])
def test_lockstep_runs_every_side_in_one_process(workload):
    """--lockstep: every side of a workload alternates steps in one process; each gets its own timing and the
    one-position classifier (--pooling cls) its own FLOP count."""
    pytest.importorskip("transformers")
    spec = dict(model="tiny", workload=workload, compile=False, steps=1, batch_size=4, seq_len=32, vocab_size=500,
                corpus=None, threads=1, dropout=0.0, pooling="cls")
    rows = throughput.run_lockstep([dict(spec, side="transferlab", precision="fp32"),
                                    dict(spec, side="transformers", precision="fp32")])
    assert [r["side"] for r in rows] == ["transferlab", "transformers"]
    assert all(r["tokens_per_s"] > 0 and math.isnan(r["peak_rss_mb"]) for r in rows)
    full = throughput.model_flops_per_token(throughput.config("tiny", workload, 500, 32, 0.0), workload, 32, 1.0)
    assert rows[0]["flops_per_token"] < full
    if workload == "finetune":
        assert all(len(r["losses"]) == 1 + throughput.WARMUP for r in rows)
    else:
        assert all(r["batch1_ms"] > 0 and r["batch32_ms"] > 0 for r in rows)


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


def test_throughput_ratios_against_both_transformers_baselines():
    # the peer's best configuration (bf16 autocast) is the baseline; fp32 is the second column; MFU on every row
    spec = dict(model="tiny", compile=False, seq_len=128, flops_per_token=1e6, peak_rss_mb=1.0)
    rows = [dict(spec, workload="infer", side="transferlab", precision="bf16", tokens_per_s=3000.0,
                 batch1_ms=10.0, batch32_ms=100.0),
            dict(spec, workload="infer", side="transformers", precision="fp32", tokens_per_s=1000.0,
                 batch1_ms=40.0, batch32_ms=300.0),
            dict(spec, workload="infer", side="transformers", precision="bf16", tokens_per_s=2000.0,
                 batch1_ms=20.0, batch32_ms=200.0)]
    fp32_only = [dict(r) for r in rows[:2]]
    throughput.add_ratios(rows, {"bf16": 100.0, "fp32": 50.0})
    ours = rows[0]
    assert ours["ratio_vs_hf_bf16"] == pytest.approx(1.5) and ours["ratio_vs_hf_fp32"] == pytest.approx(3.0)
    assert ours["batch1_ratio_vs_hf_bf16"] == pytest.approx(2.0) and ours["batch1_ratio_vs_hf_fp32"] == 4.0
    assert ours["mfu_bf16"] == pytest.approx(3000 * 1e6 / 100e9)
    assert ours["batch1_mfu_bf16"] == pytest.approx(128 / 0.010 * 1e6 / 100e9)
    line = throughput.format_row(ours)
    assert "1.50x" in line and "3.00x" in line and "2.00x" in line
    # without the bf16 baseline (--no-hf-bf16) its ratio prints as '-', the fp32 one stays
    throughput.add_ratios(fp32_only, {"bf16": 100.0, "fp32": 50.0})
    assert "ratio_vs_hf_bf16" not in fp32_only[0] and "3.00x" in throughput.format_row(fp32_only[0])


def test_int8_benchmark_reports_accuracy_change_and_latency(pretrained_dir, labeled_files, tmp_path):
    from transferlab.cli import main

    train, dev = labeled_files
    assert main([str(a) for a in ["finetune", "--init", pretrained_dir, "--train", train, "--out", tmp_path / "ft",
                                  "--epochs", 1, "--quiet"]]) == 0
    int8 = _load("int8")
    out = tmp_path / "int8.json"
    int8.main(["--model", str(tmp_path / "ft" / "final"), "--data", str(dev), "--threads", "1", "--clock", "cpu",
               "--b1-examples", "4", "--json", str(out)])
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fp32", "auto", "int8"}
    assert all(r["batch1_ms"] > 0 and r["batch32_ms"] > 0 and 0 <= r["accuracy"] <= 1 for r in rows.values())
    assert abs(rows["int8"]["accuracy_change"]) <= 0.05 and rows["int8"]["model_mb"] < rows["fp32"]["model_mb"]


# Tiny runs of the time-to-quality race on the test corpus (vocabulary 120, so both sides start near ln 120 = 4.8):
# batch 8 x 32, an evaluation every 5 steps on 2 held-out batches. Both sides pass these targets within 25 steps.
TTQ = ["--batch-size", "8", "--seq-len", "32", "--steps", "60", "--eval-every", "5", "--eval-batches", "2",
       "--chunk", "5", "--threads", "1", "--clock", "cpu", "--cap-s", "60", "--lr", "1e-3"]


@pytest.mark.parametrize("objective,target", [("mlm", 4.0), ("clm", 3.5)])
def test_time_to_quality_reaches_an_easy_target_on_both_sides(corpus_dir, tmp_path, capsys, objective, target):
    pytest.importorskip("transformers")
    out = tmp_path / "ttq.json"
    time_to_quality.main(["--corpus", str(corpus_dir), "--objective", objective, "--target", str(target), *TTQ,
                          "--json", str(out)])
    report = json.loads(out.read_text())
    ours, theirs = report["sides"]
    assert (ours["side"], theirs["side"]) == ("transferlab", "transformers")
    assert theirs["model"] == {"mlm": "BertForMaskedLM", "clm": "GPT2LMHeadModel"}[objective]
    for side in (ours, theirs):
        assert side["reached"] and side["stop"] == "target" and side["steps"] == side["steps_to_target"] <= 25
        curve = side["curve"]
        assert [c["step"] for c in curve] == list(range(5, side["steps"] + 1, 5))
        assert curve[-1]["loss"] <= target < curve[0]["loss"] < math.log(120) + 0.5
        assert side["time_to_target_s"] == curve[-1]["seconds"] > 0 and side["eval_s"] > 0
        assert side["tokens"] == side["steps"] * 8 * 32 and side["tokens_per_s"] > 0
        assert len(side["train_losses"]) == side["steps"]
    assert report["ratio"] == pytest.approx(theirs["time_to_target_s"] / ours["time_to_target_s"])
    printed = capsys.readouterr().out
    assert f"ratio (transformers time / transferlab time): {report['ratio']:.2f}x" in printed
    assert f"{ours['time_to_target_s']:.1f} s" in printed


def test_time_to_quality_reports_a_target_not_reached(corpus_dir):
    pytest.importorskip("transformers")
    # a loss no model reaches here: both sides stop at the cap (after one step) or the end of the schedule
    capped = time_to_quality.race(str(corpus_dir), "mlm", target=0.1, cap_s=1e-6, eval_every=5, eval_batches=2,
                                  batch_size=8, seq_len=32, steps=10, chunk=5, clock="cpu")
    ended = time_to_quality.race(str(corpus_dir), "clm", target=0.1, cap_s=60, eval_every=5, eval_batches=2,
                                 batch_size=8, seq_len=32, steps=10, chunk=5, clock="cpu")
    for report, stop, steps in ((capped, "cap", 1), (ended, "steps", 10)):
        assert report["ratio"] is None
        for side in report["sides"]:
            assert not side["reached"] and side["time_to_target_s"] is None
            assert side["stop"] == stop and side["steps"] == steps and side["curve"][-1]["step"] == steps
        text = time_to_quality.table(report, 0.1)
        assert text.count("not reached in") == 2 and "- (transferlab did not reach 0.1)" in text


def test_time_to_quality_ratio_is_a_lower_bound_when_only_ours_reaches():
    side = dict(steps=100, tokens=25600, final_loss=3.9, tokens_per_s=1000.0, eval_s=1.0, model="m")
    ours = dict(side, side="transferlab", reached=True, time_to_target_s=10.0, steps_to_target=40,
                tokens_to_target=10240, train_s=10.0)
    theirs = dict(side, side="transformers", reached=False, train_s=30.0)
    text = time_to_quality.table({"sides": [ours, theirs], "ratio": 3.0, "ratio_is_lower_bound": True}, 4.0)
    assert "not reached in 30 s" in text and "> 3.00x (transformers did not reach 4 in 30 s)" in text
