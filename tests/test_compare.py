"""`transferlab compare`: the grid, its files and resume; the sampler; the computed conclusion; the transfer
methods (linear probe, gradual unfreezing, LoRA); and bad specs rejected before training with the spec's line."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.cli import main
from transferlab.data.sampling import allocate, stratified_sample
from transferlab.errors import UserError
from transferlab.experiments import report
from transferlab.experiments.compare import RESULTS, CompareSpec, epoch_plan, run_compare
from transferlab.training.checkpoint import _write_marker
from transferlab.training.optim import lr_lambda
from transferlab.transfer import from_pretrained, load
from transferlab.transfer.methods import LoRALinear, layer_groups, merge_lora

PNG = b"\x89PNG\r\n\x1a\n"


def write_spec(path, checkpoint, train, dev, methods="[scratch, finetune]", budgets="[20, 40]", extra=""):
    path.write_text(f"""name: tiny
checkpoints:
  - {checkpoint}
task:
  train: {train}
  dev: {dev}
  metric: accuracy
methods: {methods}
budgets: {budgets}
seeds: 2
train:
  epochs: 2
  min_epoch_size: 40
  max_steps: 4
  lr: 1e-3
  batch_size: 16
  max_len: 32
{extra}""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory, pretrained_dir, labeled_files):
    d = tmp_path_factory.mktemp("compare")
    spec = write_spec(d / "spec.yaml", pretrained_dir, *labeled_files)
    result = run_compare(spec, d / "out", progress=False)
    return spec, d / "out", result


def test_tiny_grid_writes_every_file(grid):
    spec, out, result = grid
    rows = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    assert len(rows) == 8 and result["ran"] == 8
    assert {(r["method"], r["budget"], r["seed"]) for r in rows} == {
        (m, b, s) for m in ("scratch", "finetune") for b in ("20", "40") for s in (0, 1)}
    for r in rows:
        assert r["train_examples"] == int(r["budget"]) and r["wall_s"] > 0
        # epochs of at least 40 examples (20 labels appear twice each) make 3 steps of 16; 4 steps at most
        assert [e["epoch"] for e in r["epochs"]] == [1, 1.3333] and 1 <= r["best_epoch"] <= 2
        assert {"loss", "accuracy", "f1", "train_loss"} <= set(r["epochs"][0])
        assert 0 <= r["final"]["accuracy"] <= 1 and r["trained_params"] > 0
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("entry,checkpoint,method") and len(csv_lines) == 1 + 4
    finetune_row = next(s for s in result["summary"] if s["method"] == "finetune" and s["budget"] == "20")
    scratch_row = next(s for s in result["summary"] if s["method"] == "scratch" and s["budget"] == "20")
    assert finetune_row["gain"] == pytest.approx(finetune_row["mean"] - scratch_row["mean"])
    for name in ("data_efficiency.png", "learning_curve_20.png", "learning_curve_40.png"):
        assert (out / name).read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    assert "## Conclusion" in md and "![data efficiency](data_efficiency.png)" in md and "At 20 labels" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'src="data_efficiency.png"' not in page
    assert result["conclusion"][0] in md


def test_resume_skips_finished_runs(grid, capsys):
    spec, out, _ = grid
    path = out / RESULTS
    lines = path.read_text().splitlines()
    # An interrupted grid: two runs missing, and the last row torn mid-write.
    path.write_text("\n".join(lines[:6]) + "\n" + lines[6][:40], encoding="utf-8")
    result = run_compare(spec, out, progress=False)
    assert (result["ran"], result["skipped"]) == (2, 6)
    after = path.read_text().splitlines()
    assert after[:6] == lines[:6] and len(after) == 8, "finished rows kept as they were, the torn one replaced"
    assert (out / "report.html").is_file()
    # The CLI on the same spec and output trains nothing more.
    assert main(["compare", str(spec), "--out", str(out), "--quiet"]) == 0
    assert len(path.read_text().splitlines()) == 8


def test_changed_settings_change_the_run_fingerprints(grid):
    spec, _, _ = grid
    a = {r.key: r.fingerprint for r in CompareSpec.parse(spec).plan()}
    text = spec.read_text().replace("lr: 1e-3", "lr: 2e-3")
    changed = spec.with_name("changed.yaml")
    changed.write_text(text)
    b = {r.key: r.fingerprint for r in CompareSpec.parse(changed).plan()}
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_fingerprints_follow_file_contents_not_modification_times(tmp_path, pretrained_dir, labeled_files):
    train, dev = (Path(shutil.copy(f, tmp_path)) for f in labeled_files)
    checkpoint = Path(shutil.copytree(pretrained_dir, tmp_path / "checkpoint"))
    spec = write_spec(tmp_path / "spec.yaml", checkpoint, train, dev)
    a = {r.key: r.fingerprint for r in CompareSpec.parse(spec).plan()}
    for f in (checkpoint / "model.safetensors", train):
        os.utime(f, (1e9, 1e9))  # what a copy, restore or re-mount does to finished work's inputs
    assert {r.key: r.fingerprint for r in CompareSpec.parse(spec).plan()} == a
    train.write_text(train.read_text() + train.read_text().splitlines()[-1] + "\n")  # new contents
    b = {r.key: r.fingerprint for r in CompareSpec.parse(spec).plan()}
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_epoch_plan_repeats_small_budgets_and_caps_large_ones():
    settings = {"epochs": 3, "batch_size": 32, "min_epoch_size": 1000, "max_steps": 2000}
    assert epoch_plan(settings, 100) == (10, 3.0)  # 1,000 examples an epoch: 32 steps, 3 epochs
    assert epoch_plan(settings, 67349) == (1, pytest.approx(2000 / 2105))  # capped below one epoch
    assert epoch_plan({"epochs": 3, "batch_size": 32}, 100) == (1, 3.0)


def test_several_checkpoints_share_one_scratch_baseline(pretrained_dir, labeled_files, tmp_path):
    twin = tmp_path / "twin" / "final"
    shutil.copytree(pretrained_dir, twin)  # same architecture and tokenizer, e.g. another objective's run
    train, dev = labeled_files
    spec = CompareSpec.parse({"checkpoints": [str(pretrained_dir), {"name": "other", "path": str(twin)}],
                              "task": {"train": str(train), "dev": str(dev)},
                              "methods": ["scratch", "finetune", "pipeline"], "budgets": [20], "seeds": 1})
    assert [(r.checkpoint, r.method.label) for r in spec.plan()] == [
        ("mlm", "scratch"), ("mlm", "finetune"), ("other", "finetune"), ("-", "pipeline")]
    assert spec.task["metric"] == "accuracy" and spec.task["metrics"] == ["accuracy", "f1"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_sampler_keeps_proportions_and_is_deterministic(seed):
    labels = np.array([0] * 700 + [1] * 200 + [2] * 100)
    np.random.default_rng(0).shuffle(labels)
    for budget in (10, 100, 333):
        idx = stratified_sample(labels, budget, seed)
        assert len(idx) == budget == len(set(idx.tolist()))
        counts = np.bincount(labels[idx], minlength=3)
        np.testing.assert_allclose(counts / budget, [0.7, 0.2, 0.1], atol=1.0 / budget + 1e-9)
        np.testing.assert_array_equal(idx, stratified_sample(labels, budget, seed))
    assert not np.array_equal(stratified_sample(labels, 100, seed), stratified_sample(labels, 100, seed + 1))
    assert set(stratified_sample(labels, 100, seed)) <= set(stratified_sample(labels, 333, seed)), "nested budgets"


def test_sampler_keeps_rare_classes_and_rejects_oversized_budgets():
    assert allocate(np.array([98, 1, 1]), 3).tolist() == [1, 1, 1]
    assert allocate(np.array([50, 30, 20]), 7).sum() == 7
    with pytest.raises(UserError, match="between 1 and 5"):
        stratified_sample([0, 1, 0, 1, 0], 6, 0)


def _rows(scores: dict) -> list[dict]:
    """Fake results rows: {(method, budget): [accuracy per seed]}."""
    rows = []
    for (method, budget), values in scores.items():
        for seed, v in enumerate(values):
            rows.append({"checkpoint": "-" if method == "pipeline" else "mlm", "method": method, "kind": method,
                         "budget": budget, "budget_size": int(budget), "seed": seed, "arch": "a",
                         "final": {"accuracy": v}, "best": {"accuracy": v}, "epochs": [{"accuracy": v}],
                         "trained_params": 10, "wall_s": 1.0})
    return rows


SETUP = {"name": "t", "task": {"metric": "accuracy"}, "checkpoints": [{"name": "mlm"}], "seeds": [0, 1, 2],
         "budgets": ["100", "1000"], "budget_sizes": {"100": 100, "1000": 1000}}


def test_conclusion_is_computed_from_the_numbers():
    clear = _rows({("scratch", "100"): [0.60, 0.61, 0.62], ("finetune", "100"): [0.80, 0.81, 0.79],
                   ("scratch", "1000"): [0.70, 0.71, 0.72], ("finetune", "1000"): [0.75, 0.76, 0.74],
                   ("pipeline", "100"): [0.65] * 3, ("pipeline", "1000"): [0.73] * 3})
    text = " ".join(report.conclusions(report.summarize(clear, SETUP), SETUP))
    assert "At 100 labels**, finetune scores best (accuracy 0.800" in text
    assert "+0.190 against training from scratch" in text and "pretraining clearly helps" in text
    assert "Finetune wins at every budget" in text and "shrinks from +0.190 at 100 labels to +0.040" in text

    noisy = _rows({("scratch", "100"): [0.60, 0.70, 0.80], ("finetune", "100"): [0.72, 0.62, 0.82],
                   ("scratch", "1000"): [0.80, 0.81, 0.82], ("finetune", "1000"): [0.75, 0.76, 0.74],
                   ("pipeline", "100"): [0.65] * 3, ("pipeline", "1000"): [0.73] * 3})
    other = " ".join(report.conclusions(report.summarize(noisy, SETUP), SETUP))
    assert other != text
    assert "too small to call" in other and "not a clear win" in other
    assert "At 1000 labels**, scratch scores best" in other and "pretraining did not help at this budget" in other
    assert "The winner changes with the number of labels: finetune at 100, scratch at 1000" in other
    assert "majority" not in other  # no class counts in SETUP, so no floor to state

    # 70% of the dev set has the most frequent training label: a model at 0.70 has learned nothing.
    counted = {**SETUP, "class_counts": {"neg": 40, "pos": 60}, "dev_class_counts": {"neg": 30, "pos": 70}}
    floor = report.conclusions(report.summarize(clear, counted), counted)
    assert floor[0].startswith("Always answering the most frequent training label ('pos') scores 0.700 accuracy")
    assert "pipeline and scratch do not beat the majority class (0.700)." in floor[1]
    assert "beat the majority class" not in floor[2]  # at 1000 labels every entry scores above 0.70


def test_slanted_triangular_schedule_and_discriminative_lrs(pretrained_dir):
    f = lr_lambda("slanted", total_steps=100, warmup_steps=10)
    values = [f(s) for s in range(100)]
    assert values[0] == pytest.approx(1 / 32) and max(values) == pytest.approx(1.0) and np.argmax(values) == 10
    assert values[99] < 0.05 and all(a >= b for a, b in zip(values[10:], values[11:]))
    model = from_pretrained(pretrained_dir, num_labels=2, verbose=False)
    method = model.compile(lr=1e-3, method="gradual-unfreeze").method
    optimizer = method.optimizer(model.module, 1e-3, 0.01)
    lrs = sorted({round(g["lr"], 12) for g in optimizer.param_groups}, reverse=True)
    assert len(lrs) == len(layer_groups(model.module)) == 4  # embeddings, 2 blocks, head
    np.testing.assert_allclose([lrs[i] / lrs[i + 1] for i in range(3)], 2.6)


def test_gradual_unfreeze_grows_the_trainable_set_each_epoch(pretrained_dir, labeled_files):
    train, dev = labeled_files
    model = from_pretrained(pretrained_dir, num_labels=2, label_names=["neg", "pos"], verbose=False, max_len=32)
    model.compile(lr=1e-3, method="gradual-unfreeze")
    groups = layer_groups(model.module)
    sizes = [sum(p.numel() for p in g) for g in groups]
    history = model.fit(str(dev), epochs=4, batch_size=32, verbose=False)
    trainable = history.history["trainable_params"]
    assert trainable == [sum(sizes[-k:]) for k in range(1, 5)]


def test_gradual_unfreeze_spreads_groups_over_a_run_shorter_than_one_epoch_each():
    from types import SimpleNamespace

    from transferlab.transfer.methods import GradualUnfreeze

    groups = [[torch.nn.Parameter(torch.zeros(1))] for _ in range(4)]
    callback = GradualUnfreeze(groups)
    state = SimpleNamespace(steps_per_epoch=10, max_steps=8, step=0)  # under one epoch: unfreeze every 2 steps
    callback.on_fit_start(state)
    trainable = []
    for step in range(1, 9):
        trainable.append(sum(p.requires_grad for g in groups for p in g))
        state.step = step
        callback.on_step_end(state, {})
    assert trainable == [1, 1, 2, 2, 3, 3, 4, 4]


def test_linear_probe_leaves_the_backbone_unchanged(pretrained_dir, labeled_files):
    train, _ = labeled_files
    model = from_pretrained(pretrained_dir, num_labels=2, label_names=["neg", "pos"], verbose=False, max_len=32)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.compile(lr=1e-2, method="linear-probe")
    history = model.fit(str(train), epochs=1, batch_size=32, verbose=False)
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["heads.classifier.out.weight"], after["heads.classifier.out.weight"])
    assert history.history["trainable_params"] == [sum(p.numel() for p in model.module.heads.parameters())]


def test_lora_trains_only_adapters_and_head_then_merges_and_loads(pretrained_dir, labeled_files, tmp_path):
    train, dev = labeled_files
    model = from_pretrained(pretrained_dir, num_labels=2, label_names=["neg", "pos"], verbose=False, max_len=32)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.compile(lr=1e-2, method="lora", method_options={"lora_rank": 4})
    trainable = {n for n, p in model.module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("heads.") for n in trainable)
    assert sum(isinstance(m, LoRALinear) for m in model.module.modules()) == 2 * 4  # 2 blocks x qkv/proj/fc/proj
    lora = model.module.backbone.h[0].attn.qkv
    # Cross-attention uses the matrix directly: the merged weight must give the same output as the adapter path.
    x = torch.randn(3, lora.base.in_features)
    torch.nn.init.normal_(lora.lora_b)
    torch.testing.assert_close(torch.nn.functional.linear(x, lora.weight, lora.bias), lora(x))
    torch.nn.init.zeros_(lora.lora_b)
    model.module.train()
    history = model.fit(str(train), epochs=1, batch_size=32, verbose=False)
    assert history.history["trainable_params"][0] < 0.2 * sum(p.numel() for p in model.module.parameters())
    # fit merged the adapters: a plain model again, the base weights moved only by the low-rank update
    assert not any(isinstance(m, LoRALinear) for m in model.module.modules())
    after = model.module.state_dict()
    assert after.keys() == before.keys()
    assert torch.equal(after["backbone.wte.weight"], before["backbone.wte.weight"]), "embeddings stay frozen"
    delta = after["backbone.h.0.attn.qkv.weight"] - before["backbone.h.0.attn.qkv.weight"]
    assert 0 < torch.linalg.matrix_rank(delta) <= 4
    model.save(tmp_path / "lora")
    again = load(tmp_path / "lora")
    np.testing.assert_allclose(again.evaluate(str(dev))["loss"], model.evaluate(str(dev))["loss"], rtol=1e-5)


def test_merge_lora_keeps_outputs(pretrained_dir):
    model = from_pretrained(pretrained_dir, num_labels=2, verbose=False).compile(method="lora")
    for m in model.module.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b, std=0.05)
    model.module.eval()
    batch = {"input_ids": torch.randint(5, 100, (2, 9)), "attention": torch.ones(2, 9, dtype=torch.long)}
    with torch.no_grad():
        before = model.module(batch)["logits"]
        assert merge_lora(model.module) == 8
        torch.testing.assert_close(model.module(batch)["logits"], before, rtol=1e-4, atol=1e-5)


def test_finetune_method_option_writes_a_loadable_model(pretrained_dir, labeled_files, tmp_path):
    train, dev = labeled_files
    assert main(["finetune", "--init", str(pretrained_dir), "--train", str(train), "--dev", str(dev), "--out",
                 str(tmp_path / "ft"), "--epochs", "1", "--lr", "1e-3", "--max-len", "32", "--quiet",
                 "--method", "lora", "--lora-rank", "2"]) == 0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["method"] == "lora" and 0 <= results["final"]["accuracy"] <= 1
    assert max(results["history"]["trainable_params"]) < 0.2 * sum(
        p.numel() for p in load(tmp_path / "ft" / "final").module.parameters())
    assert load(tmp_path / "ft" / "final").evaluate(str(dev))["accuracy"] == pytest.approx(
        results["final"]["accuracy"])


# ------------------------------------------------------------------------------------------------ bad specs


@pytest.fixture()
def other_tokenizer_checkpoint(pretrained_dir, tmp_path):
    d = tmp_path / "other" / "final"
    shutil.copytree(pretrained_dir, d)
    config = json.loads((d / "config.json").read_text())
    config["tokenizer_sha256"] = "0" * 64  # as if pretrained with another tokenizer
    (d / "config.json").write_text(json.dumps(config))
    (d / "complete.json").unlink()  # a hand-edited file no longer matches the completeness marker: re-seal it
    _write_marker(d)
    return d


@pytest.mark.parametrize("case,line,needles", [
    ("method", 8, ["unknown method 'bert-magic'", "Choose one of: scratch, finetune, linear-probe"]),
    ("budget", 9, ["budget 500 is larger than the training set", "has 160 examples", "Use at most 160, or 'all'"]),
    ("metric", 7, ["'pearson' is a regression metric", "classification task", "accuracy, f1, mcc"]),
    ("tokenizer", 4, ["different tokenizer", "spec.yaml:3", "same `transferlab tokenizer train`"]),
    ("option", 8, ["unknown key 'rnak'", "rank"]),
    ("pooling", 8, ["unknown pooling 'max'", "choose cls, mean, last"]),
])
def test_bad_spec_is_rejected_before_training_with_its_line(case, line, needles, pretrained_dir, labeled_files,
                                                            other_tokenizer_checkpoint, tmp_path, capsys):
    train, dev = labeled_files
    kwargs = {}
    if case == "method":
        kwargs["methods"] = "[scratch, bert-magic]"
    elif case == "budget":
        kwargs["budgets"] = "[20, 500]"
    elif case == "option":
        kwargs["methods"] = "[{lora: {rnak: 4}}]"
    elif case == "pooling":
        kwargs["methods"] = "[{finetune: {pooling: max}}]"
    spec = write_spec(tmp_path / "spec.yaml", pretrained_dir, train, dev, **kwargs)
    text = spec.read_text()
    if case == "metric":
        spec.write_text(text.replace("metric: accuracy", "metric: pearson"))
    if case == "tokenizer":
        spec.write_text(text.replace(f"  - {pretrained_dir}\n", f"  - {pretrained_dir}\n  - "
                                                                 f"{other_tokenizer_checkpoint}\n"))
    with pytest.raises(UserError) as err:
        run_compare(spec, tmp_path / "out", progress=False)
    message = str(err.value)
    assert message.startswith(f"{spec}:{line}: "), message
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "out").exists(), "nothing trained or written"
    assert main(["compare", str(spec), "--out", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "Traceback" not in stderr


@pytest.mark.data
@pytest.mark.parametrize("name", ["sst2", "mrpc"])
def test_example_specs_are_valid(name, pretrained_dir):
    from pathlib import Path

    import yaml

    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("needs ../shared/data")
    spec = yaml.safe_load((Path(__file__).parents[1] / "examples" / f"compare_{name}.yaml").read_text())
    spec["checkpoints"] = [str(pretrained_dir)]  # the real checkpoint is the lead's to pretrain
    for key in ("train", "dev"):
        spec["task"][key] = spec["task"][key].replace("../shared/data", str(SHARED_DATA))
    parsed = CompareSpec.parse(spec)
    assert [m.method for m in parsed.methods] == ["scratch", "finetune", "linear-probe", "gradual-unfreeze", "lora",
                                                  "pipeline"]
    assert parsed.budget_sizes["all"] == {"sst2": 67349, "mrpc": 3668}[name] and len(parsed.plan()) == 72
