"""Multi-task learning: masked losses over the labels present, the task sampler, loss weightings checked against
hand computations, Δm, checkpoints that save, load and transfer like any other, two gloo ranks that train what one
process trains, a tiny spec end to end from the CLI, and the bad inputs a spec can hold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import transferlab
from conftest import on_gloo_ranks, sentences
from transferlab.cli import main
from transferlab.data.multitask import (MultiTaskBatches, SourceSampler, TaskLabels, TaskSource, parse_task,
                                        read_task_source, sampling_probabilities, source_from_arrays)
from transferlab.errors import UserError
from transferlab.experiments.multitask import delta_m, relative_change
from transferlab.heads import ClassificationHead
from transferlab.models.base import Backbone
from transferlab.tasks.multitask import MultiTaskModule, task_loss
from transferlab.tasks.weighting import PCGrad, Uncertainty, pcgrad_weights, uncertainty_term
from transferlab.training.checkpoint import load_weights

ANIMALS = {"cat", "dog", "bird"}


# ------------------------------------------------------------------------------------------------ a toy backbone


@dataclass
class ToyConfig:
    d_model: int = 3
    dropout: float = 0.0
    init_std: float = 0.5
    default_pooling: str = "mean"
    modality: str = "image"  # no pooler in the head: logits are linear in the features
    family: str = "toy"


class Toy(Backbone):
    """features = x @ W, one position: small enough to compute every gradient by hand."""

    unit = "rows"

    def __init__(self, d_in: int = 2, d: int = 3):
        super().__init__()
        self.config = ToyConfig(d_model=d)
        self.w = torch.nn.Parameter(torch.randn(d_in, d, generator=torch.Generator().manual_seed(0)))

    def features(self, batch):
        return (batch["x"] @ self.w)[:, None, :], None  # (B, 1, C)

    def count(self, batch):
        return len(batch["x"])


def toy_module(tasks, weighting="equal"):
    torch.manual_seed(0)
    return MultiTaskModule(Toy(), tasks, weighting=weighting)


# ------------------------------------------------------------------------------------------------ masked losses


def test_masked_loss_is_the_mean_over_present_labels_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 0, 1, 2])
    present = torch.tensor([True, False, True, True, False, True])
    brute = np.mean([float(torch.nn.functional.cross_entropy(logits[i:i + 1], labels[i:i + 1]))
                     for i in range(6) if present[i]])
    assert float(task_loss("classification", logits, labels, present)) == pytest.approx(brute, rel=1e-6)
    # regression: the mean squared error of the present targets
    y = torch.randn(6, generator=g)
    out = torch.randn(6, 1, generator=g)
    brute = np.mean([(float(out[i, 0]) - float(y[i])) ** 2 for i in range(6) if present[i]])
    assert float(task_loss("regression", out, y, present)) == pytest.approx(brute, rel=1e-6)
    # multilabel: every cell on its own
    cells = torch.randn(6, 4, generator=g)
    target = (torch.rand(6, 4, generator=g) > 0.5).float()
    mask = torch.rand(6, 4, generator=g) > 0.3
    brute = np.mean([float(torch.nn.functional.binary_cross_entropy_with_logits(cells[i, j], target[i, j]))
                     for i in range(6) for j in range(4) if mask[i, j]])
    assert float(task_loss("multilabel", cells, target, mask)) == pytest.approx(brute, rel=1e-6)


def test_an_example_without_a_label_gives_that_head_no_gradient():
    tasks = [{"name": "a", "kind": "classification", "num_labels": 3}, {"name": "b", "kind": "regression"}]
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    a = torch.tensor([0, 1, 2, 1, 0])
    present_a = torch.tensor([True, False, True, False, True])
    b = torch.randn(5)

    def grads(batch):
        m = toy_module(tasks)
        m(batch)["loss"].backward()
        return {k: p.grad.clone() for k, p in m.named_parameters()}

    full = grads({"x": x, "labels.a": a, "present.a": present_a, "labels.b": b, "present.b": torch.ones(5, dtype=bool)})
    keep = present_a.nonzero().squeeze(1)
    # head a: the same gradient as a batch holding only its labelled examples, whatever the others' labels say
    only = grads({"x": x[keep], "labels.a": a[keep], "present.a": torch.ones(3, dtype=bool)})
    garbage = grads({"x": x, "labels.a": torch.tensor([0, 2, 2, 0, 0]), "present.a": present_a, "labels.b": b,
                     "present.b": torch.ones(5, dtype=bool)})
    for k in ("heads.a.out.weight", "heads.a.out.bias"):
        torch.testing.assert_close(full[k], only[k])
        torch.testing.assert_close(full[k], garbage[k])
    # a task with no labels in the batch: its head is in the graph (DDP needs that) with an exactly zero gradient
    none_b = grads({"x": x, "labels.a": a, "present.a": present_a})
    assert torch.count_nonzero(none_b["heads.b.out.weight"]) == 0 and torch.count_nonzero(none_b["heads.b.out.bias"]) == 0


# ------------------------------------------------------------------------------------------------ weightings


def test_uncertainty_weighting_matches_kendall_by_hand():
    w = Uncertainty({"a": "classification", "b": "regression"})
    with torch.no_grad():
        w.log_var["a"].fill_(0.3)
        w.log_var["b"].fill_(-0.2)
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
    total = w(losses, {"a": True, "b": True})
    hand = np.exp(-0.3) * 2.0 + 0.15 + 0.5 * np.exp(0.2) * 0.5 - 0.1
    assert float(total.detach()) == pytest.approx(hand, rel=1e-6)
    total.backward()
    assert float(w.log_var["a"].grad) == pytest.approx(-np.exp(-0.3) * 2.0 + 0.5, rel=1e-6)
    assert float(w.log_var["b"].grad) == pytest.approx(-0.5 * np.exp(0.2) * 0.5 + 0.5, rel=1e-6)
    # its minimum over s: log 2L for classification, log L for regression
    for kind, best in (("classification", np.log(2 * 0.7)), ("regression", np.log(0.7))):
        s = torch.tensor(0.0, requires_grad=True)
        opt = torch.optim.SGD([s], lr=0.5)
        for _ in range(300):
            opt.zero_grad()
            uncertainty_term(torch.tensor(0.7), s, kind).backward()
            opt.step()
        assert float(s.detach()) == pytest.approx(best, abs=1e-4)
    # an absent task's s gets no gradient (its s/2 term alone would drive it down forever)
    w.zero_grad()
    w({"a": torch.tensor(2.0), "b": torch.tensor(0.0)}, {"a": True, "b": False}).backward()
    assert float(w.log_var["b"].grad) == 0.0


def test_pcgrad_projects_conflicting_gradients_as_by_hand():
    # g1 = (1, 0), g2 = (-1, 1) conflict (g1.g2 = -1): g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1)
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    w = pcgrad_weights(g @ g.T, [[1], [0]])
    torch.testing.assert_close(w.float() @ g, torch.tensor([0.5, 1.5]))
    # no conflict: plain sum
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(pcgrad_weights(h @ h.T, [[1], [0]]).float(), torch.tensor([1.0, 1.0]))


def _project_by_hand(grads: list[torch.Tensor], order: list[list[int]]) -> torch.Tensor:
    """PCGrad on the gradient vectors themselves (Yu et al.'s Algorithm 1)."""
    out = []
    for i, gi in enumerate(grads):
        pc = gi.clone()
        for j in order[i]:
            dot = pc @ grads[j]
            if dot < 0:
                pc = pc - dot / (grads[j] @ grads[j]) * grads[j]
        out.append(pc)
    return torch.stack(out).sum(0)


def test_pcgrad_module_gradient_is_the_projected_sum_and_heads_keep_their_own():
    tasks = [{"name": n, "kind": "regression"} for n in ("a", "b", "c")]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 2, generator=gen)
    batch = {"x": x, "step_seed": 5}
    targets = {n: torch.randn(8, generator=gen) * 3 for n in ("a", "b", "c")}
    for n in ("a", "b", "c"):
        batch[f"labels.{n}"], batch[f"present.{n}"] = targets[n], torch.ones(8, dtype=bool)
    m = toy_module(tasks, "pcgrad")
    m(batch)["loss"].backward()
    # by hand: each task's gradient on the shared W, projected in PCGrad's seeded order, summed
    per_task, heads = [], {}
    for n in ("a", "b", "c"):
        ref = toy_module(tasks)
        out = ref(batch)
        loss = task_loss("regression", out[f"logits.{n}"], targets[n], batch[f"present.{n}"])
        loss.backward()
        per_task.append(ref.backbone.w.grad.reshape(-1).double())
        heads[n] = ref.heads[n].out.weight.grad
    gen = torch.Generator().manual_seed(5)
    order = [[j for j in torch.randperm(3, generator=gen).tolist() if j != i] for i in range(3)]
    expected = _project_by_hand(per_task, order)
    assert not torch.allclose(expected, sum(per_task)), "the toy problem has conflicts to project"
    torch.testing.assert_close(m.backbone.w.grad.reshape(-1).double(), expected, rtol=1e-5, atol=1e-6)
    for n in ("a", "b", "c"):
        torch.testing.assert_close(m.heads[n].out.weight.grad, heads[n], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ Δm


def test_delta_m_matches_its_formula():
    joint = {"a": 0.80, "b": 0.50, "c": 2.0}
    single = {"a": 0.75, "b": 0.60, "c": 2.5}
    metrics = {"a": "accuracy", "b": "pearson", "c": "loss"}  # c: lower is better, so its drop counts as a gain
    hand = 100 / 3 * ((0.80 - 0.75) / 0.75 + (0.50 - 0.60) / 0.60 - (2.0 - 2.5) / 2.5)
    assert delta_m(joint, single, metrics) == pytest.approx(hand)
    assert relative_change(0.5, 0.0, "accuracy") != relative_change(0.5, 0.0, "accuracy")  # NaN: undefined


# ------------------------------------------------------------------------------------------------ sampling


def test_sampling_frequencies_match_their_formula():
    sizes = [100, 300, 600]
    n = np.asarray(sizes, dtype=float)
    expected = {"proportional": n / n.sum(), "uniform": np.full(3, 1 / 3),
                "temperature": n ** 0.5 / (n ** 0.5).sum(), "weighted": np.array([0.25, 0.0, 0.75])}
    for strategy, p in expected.items():
        got = sampling_probabilities(sizes, strategy, temperature=2.0, weights=[1, 0, 3])
        np.testing.assert_allclose(got, p)
        sampler = SourceSampler(sizes, strategy, seed=4, temperature=2.0, weights=[1, 0, 3])
        draws = np.array([sampler.source_at(s) for s in range(20000)])
        np.testing.assert_allclose(np.bincount(draws, minlength=3) / len(draws), p, atol=0.015)
        again = SourceSampler(sizes, strategy, seed=4, temperature=2.0, weights=[1, 0, 3])
        assert [again.source_at(s) for s in range(3000, 0, -7)] == [int(draws[s]) for s in range(3000, 0, -7)]
        np.testing.assert_array_equal(again.draws_before(2500), np.bincount(draws[:2500], minlength=3))
    rr = SourceSampler(sizes, "round-robin")
    assert [rr.source_at(s) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(UserError, match="sum to something positive"):
        sampling_probabilities(sizes, "weighted", weights=[0, 0, 0])


def test_batches_walk_each_source_once_per_pass():
    x = np.zeros((10, 4, 4), dtype=np.uint8)
    a = source_from_arrays(x, {"a": ("classification", [i % 2 for i in range(10)])}, source="A")
    b = source_from_arrays(x[:4], {"b": ("regression", [1.0, None, 2.0, 3.0])}, source="B")
    from transferlab.inputs.image import ImageInputs

    inputs = ImageInputs((4, 4), 1, (0.0,), (1.0,))
    data = MultiTaskBatches([a, b], [inputs.examples(a.data), inputs.examples(b.data)], 2, SourceSampler([10, 4]))
    seen = {0: [], 1: []}
    for step in range(40):
        k, idx = data.indices(step)
        seen[k] += idx.tolist()
    for k, n in ((0, 10), (1, 4)):
        passes = [sorted(seen[k][i:i + n]) for i in range(0, len(seen[k]) - n + 1, n)]
        assert all(p == list(range(n)) for p in passes), "every example once per pass"
    batch = data.batch(next(s for s in range(40) if data.indices(s)[0] == 1))
    assert "labels.a" not in batch and float(batch["norm.b"]) == float(batch["present.b"].sum())


# ------------------------------------------------------------------------------------------------ reading


def test_one_file_with_several_label_columns_marks_missing_cells(tmp_path):
    path = tmp_path / "multi.tsv"
    path.write_text("sentence\ttopic\tscore\tcat\tdog\n"
                    "a cat sat\tpets\t0.5\t1\t0\n"
                    "the sky\t?\t1.5\t0\t?\n"
                    "a dog ran\tpets\t\t0\t1\n"
                    "red tree\tnature\t2.0\t\t\n", encoding="utf-8")
    src = read_task_source(path, [{"name": "topic", "kind": "classification", "columns": ["topic"]},
                                  {"name": "score", "kind": "regression", "columns": ["score"]},
                                  {"name": "animal", "kind": "multilabel", "columns": ["cat", "dog"]}])
    assert src.tasks["topic"].label_names == ["nature", "pets"]
    np.testing.assert_array_equal(src.tasks["topic"].values, [1, -1, 1, 0])
    np.testing.assert_array_equal(src.tasks["score"].present, [True, True, False, True])
    np.testing.assert_array_equal(src.tasks["animal"].present, [[1, 1], [1, 0], [1, 1], [0, 0]])
    assert len(src.complete()) == 1  # only the first row is labelled for everything


@pytest.mark.parametrize("cells,kind,match", [
    (["1.5", "2.25", "3.0"], "classification", "look like regression targets"),
    (["pos", "neg", "pos"], "regression", "is regression but"),
    (["1", "maybe", "0"], "multilabel", "holds 0 or 1"),
    (["?", "", "?"], "classification", "every label of task 'x'"),
    (["pos", "pos", "?"], "classification", "at least two classes"),
])
def test_labels_that_do_not_fit_the_head_kind_are_named(cells, kind, match):
    with pytest.raises(UserError, match=match):
        parse_task("x", kind, {"c": cells}, [2, 3, 4], "f.tsv")


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def text_tasks(tmp_path_factory):
    """Two text tasks in separate files (animal: classification; length: regression) and one file labelling
    both with gaps."""
    d = tmp_path_factory.mktemp("mt")
    for split, seed, n in (("train", 1, 64), ("dev", 2, 24)):
        (d / "animal").mkdir(exist_ok=True)
        (d / "length").mkdir(exist_ok=True)
        with open(d / "animal" / f"{split}.tsv", "w") as f:
            f.write("sentence\tlabel\n")
            for s in sentences(n, seed):
                f.write(f"{s}\t{'pos' if ANIMALS & set(s.split()) else 'neg'}\n")
        with open(d / "length" / f"{split}.tsv", "w") as f:
            f.write("sentence\tscore\n")
            for s in sentences(n, seed + 10):
                f.write(f"{s}\t{len(s.split()) / 4:.2f}\n")
        with open(d / f"both_{split}.tsv", "w") as f:
            f.write("sentence\tanimal\tlength\n")
            for i, s in enumerate(sentences(n, seed + 20)):
                animal = "?" if i % 3 == 0 else ("pos" if ANIMALS & set(s.split()) else "neg")
                length = "" if i % 4 == 1 else f"{len(s.split()) / 4:.2f}"
                f.write(f"{s}\t{animal}\t{length}\n")
    return d


def test_multitask_checkpoint_saves_loads_and_transfers(pretrained_dir, text_tasks, tmp_path):
    model = transferlab.from_pretrained(pretrained_dir, heads={"animal": 2, "length": "regression"},
                                        weighting="uncertainty", verbose=False)
    model.compile(lr=1e-3, sampling="uniform", warmup=0.0)
    data = {"animal": str(text_tasks / "animal"), "length": str(text_tasks / "length")}
    model.fit(data, validation_data=data, steps=4, batch_size=8, verbose=False, run_dir=tmp_path / "run")
    saved = load_weights(tmp_path / "run" / "final")
    assert {"heads.animal.out.weight", "heads.length.out.weight", "weighting.log_var.animal"} <= set(saved)
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert [t["name"] for t in config["task"]["tasks"]] == ["animal", "length"]
    assert config["task"]["tasks"][0]["label_names"] == ["neg", "pos"]
    loaded = transferlab.load(tmp_path / "run" / "final")
    again, before = loaded.evaluate(data), model.evaluate(data)
    assert again.keys() == before.keys() == {"animal", "length"}
    for task in again:
        assert again[task] == pytest.approx(before[task])
    # transfer like any other checkpoint: a single-task head swap drops every task head ...
    single = transferlab.from_pretrained(tmp_path / "run" / "final", num_labels=2, verbose=False)
    assert {"heads.animal.out.weight", "heads.length.out.weight"} <= set(single.report.dropped)
    # ... and a multi-task one keeps the heads it names, trains the others fresh
    kept = transferlab.from_pretrained(tmp_path / "run" / "final", heads={"animal": 2, "topic": 3},
                                       keep_heads=["animal"], verbose=False)
    assert "heads.animal.out.weight" in kept.report.loaded and "heads.topic.out.weight" in kept.report.new
    torch.testing.assert_close(kept.module.heads["animal"].out.weight, saved["heads.animal.out.weight"])
    with pytest.raises(UserError, match="same task name and number of labels"):
        transferlab.from_pretrained(tmp_path / "run" / "final", heads={"animal": 3}, keep_heads=["animal"],
                                    verbose=False)


# ------------------------------------------------------------------------------------------------ two ranks


def _ddp_multitask(init, task_dir, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    model = transferlab.from_pretrained(init, heads={"animal": 2, "length": "regression"}, dropout=0.0, verbose=False)
    model.compile(lr=1e-3, warmup=0.0, precision="fp32", sampling="temperature")
    sources = model.sources({"animal": str(task_dir / "animal")}) + [read_task_source(
        task_dir / "both_train.tsv", [{"name": "length", "kind": "regression", "columns": ["length"]}])]
    model.fit(sources, steps=6, batch_size=10, verbose=False, run_dir=out)
    sampler = SourceSampler([len(s) for s in sources], "temperature", seed=0)
    mine = [sampler.source_at(s) for s in range(200)]
    if dist.is_initialized():
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        assert all(e == mine for e in every), "every rank draws the same source at every step"
        assert set(mine[:6]) == {0, 1}, "the run has steps that leave a head without labels"


def test_two_gloo_ranks_train_what_one_process_trains(pretrained_dir, text_tasks, tmp_path):
    on_gloo_ranks(_ddp_multitask, pretrained_dir, text_tasks, tmp_path / "ddp")
    _ddp_multitask(pretrained_dir, text_tasks, tmp_path / "single")
    a, b = load_weights(tmp_path / "ddp" / "final"), load_weights(tmp_path / "single" / "final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4, msg=lambda m: f"{k}: {m}")


# ------------------------------------------------------------------------------------------------ the CLI


def _spec(tmp_path, text_tasks, ckpt, **changes) -> str:
    spec = {"name": "tiny", "checkpoint": str(ckpt), "out": str(tmp_path / "out"),
            "tasks": [{"name": "animal", "train": str(text_tasks / "animal"), "dev": str(text_tasks / "animal")},
                      {"name": "length", "kind": "regression", "train": str(text_tasks / "length"),
                       "dev": str(text_tasks / "length")}],
            "sampling": {"strategy": "temperature", "temperature": 2},
            "weighting": ["equal", "uncertainty"], "seeds": 2,
            "train": {"steps": 3, "batch_size": 8, "lr": 1e-3}}
    spec.update(changes)
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_a_tiny_multitask_spec_runs_end_to_end(pretrained_dir, text_tasks, tmp_path, capsys):
    spec = _spec(tmp_path, text_tasks, pretrained_dir)
    assert main(["multitask", spec, "--quiet"]) == 0
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted({(r["variant"], r["task"] or "") for r in rows}) == [
        ("joint-equal", ""), ("joint-uncertainty", ""), ("single", "animal"), ("single", "length")]
    assert len(rows) == 8 and all("task_weights" in r for r in rows)
    report = (out / "report.md").read_text()
    assert "Δm" in report and "animal" in report and "length" in report
    assert any(v in report for v in ("negative transfer", "positive transfer", "within noise"))
    # again: every run is found finished
    assert main(["multitask", spec, "--quiet"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 8


def test_a_worker_process_gives_the_rows_of_this_process_from_relative_paths(pretrained_dir, text_tasks, tmp_path,
                                                                             monkeypatch):
    import shutil

    from transferlab.experiments.executors import ExecutorConfig
    from transferlab.experiments.multitask import run_multitask

    shutil.copytree(text_tasks / "animal", tmp_path / "animal")
    monkeypatch.chdir(tmp_path)  # the spec names its data relative to here, as a user's spec does
    spec = {"name": "rel", "checkpoint": str(pretrained_dir), "seeds": 1, "weighting": "equal",
            "tasks": [{"name": "animal", "train": "animal", "dev": "animal"}],
            "train": {"steps": 2, "batch_size": 8, "lr": 1e-3}}
    here = run_multitask(dict(spec), "here", progress=False, executor=ExecutorConfig(workers=1, threads=1))
    pool = run_multitask(dict(spec), "pool", progress=False, executor=ExecutorConfig(workers=2, threads=1))

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    assert pool["ran"] == 2 and strip(pool["rows"]) == strip(here["rows"])


def test_shared_file_with_missing_labels_runs_and_drop_incomplete_drops(pretrained_dir, text_tasks):
    from transferlab.recipes.multitask import MultitaskConfig, train_multitask

    tasks = [{"name": "animal", "kind": "classification", "columns": ["animal"]},
             {"name": "length", "kind": "regression", "columns": ["length"]}]
    data = {"train": str(text_tasks / "both_train.tsv"), "dev": str(text_tasks / "both_dev.tsv")}
    masked = train_multitask(MultitaskConfig(init=str(pretrained_dir), tasks=tasks, data=data, steps=2, batch_size=8,
                                             progress=False))
    dropped = train_multitask(MultitaskConfig(init=str(pretrained_dir), tasks=tasks, data=data, steps=2,
                                              batch_size=8, progress=False, drop_incomplete=True))
    # one file labelling both tasks: every step holds both, so PCGrad has gradients to project ...
    train_multitask(MultitaskConfig(init=str(pretrained_dir), tasks=tasks, data=data, steps=2, batch_size=8,
                                    progress=False, weighting="pcgrad"))
    # ... with a file per task it would be 'equal' under another name: refused before training
    model = transferlab.from_pretrained(pretrained_dir, heads={"animal": 2, "length": "regression"},
                                        weighting="pcgrad", verbose=False)
    with pytest.raises(UserError, match="no step holds two tasks"):
        model.fit({"animal": str(text_tasks / "animal"), "length": str(text_tasks / "length")}, steps=2,
                  batch_size=8, verbose=False)
    n_masked = sum(masked["train_examples"].values())
    n_dropped = sum(dropped["train_examples"].values())
    assert n_masked == 64 - len([i for i in range(64) if i % 3 == 0 and i % 4 == 1]), "unlabelled rows train nothing"
    assert n_dropped == 64 - len([i for i in range(64) if i % 3 == 0 or i % 4 == 1])
    assert masked["tasks"]["animal"]["train_examples"] == 64 - len(range(0, 64, 3))
    assert set(masked["tasks"]["length"]["dev"]) == {"loss", "pearson", "spearman"}


@pytest.mark.parametrize("change,line_of,match", [
    (lambda s: s["tasks"].append(dict(s["tasks"][0])), "tasks.2.name", "is used twice"),
    (lambda s: s["tasks"][0].update(kind="regression"), "tasks", "is regression but"),
    (lambda s: s["tasks"][1].update(kind="classification"), "tasks", "look like regression targets"),
    (lambda s: s.update(sampling={"strategy": "weighted", "weights": {"animal": 0, "length": 0}}),
     "sampling.weights", "sum to 0"),
    (lambda s: s["tasks"][0].update(column="missing"), "tasks", "every label of task 'animal'"),
    (lambda s: s["tasks"][1].update(train="IMAGES", dev="IMAGES"), "tasks.1.train", "holds image data"),
    (lambda s: s.update(weighting=["equal", "pcgrad"]), "weighting", "pcgrad would train exactly as 'equal'"),
])
def test_bad_specs_name_the_line_and_the_fix_before_training(pretrained_dir, text_tasks, tmp_path, capsys, change,
                                                             line_of, match):
    import yaml

    spec_path = _spec(tmp_path, text_tasks, pretrained_dir)
    spec = yaml.safe_load(open(spec_path))
    images = tmp_path / "img.npz"
    np.savez(images, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    change(spec)
    for t in spec["tasks"]:
        for k in ("train", "dev"):
            if t.get(k) == "IMAGES":
                t[k] = str(images)
    if spec["tasks"][0].get("column") == "missing":  # a label column that exists but is empty everywhere
        path = tmp_path / "empty.tsv"
        path.write_text("sentence\tmissing\n" + "".join(f"{s}\t?\n" for s in sentences(5)))
        spec["tasks"][0].update(train=str(path), dev=str(path))
    with open(spec_path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    assert main(["multitask", spec_path, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert match in err and "spec.yaml:" in err and f": {line_of}: " in err, err
    assert not (tmp_path / "out" / "results.jsonl").exists(), "nothing trained"


# ------------------------------------------------------------------------------------------------ intermediate


def test_compare_runs_intermediate_task_transfer_beside_direct_and_scratch(pretrained_dir, labeled_files, text_tasks,
                                                                          tmp_path):
    from transferlab.experiments.compare import run_compare

    train, dev = labeled_files
    spec = {"name": "inter", "checkpoints": [str(pretrained_dir)],
            "task": {"train": str(train), "dev": str(dev)},
            "methods": ["scratch", "finetune",
                        {"intermediate": {"source": {"train": str(text_tasks / "length"), "task": "regression"},
                                          "source_epochs": 1, "source_max": 32}}],
            "budgets": [40], "seeds": 1, "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_len": 32}}
    result = run_compare(spec, out=tmp_path / "cmp", progress=False)
    kinds = {r["kind"] for r in result["rows"]}
    assert kinds == {"scratch", "finetune", "intermediate"}
    inter = next(s for s in result["summary"] if s["kind"] == "intermediate")
    assert inter["gain"] is not None, "compared with scratch like every transfer method"
    bad = dict(spec, methods=[{"intermediate": {"source": {"train": str(tmp_path / "nope.tsv")}}}])
    with pytest.raises(UserError, match=r"methods\.0\.intermediate\.source\.train"):
        run_compare(bad, out=tmp_path / "bad", progress=False)


def test_image_csv_with_label_columns_reads_images_and_masks(tmp_path):
    from PIL import Image

    rows = ["path,has_bar,count"]
    for i, (bar, count) in enumerate([("1", "2"), ("?", "1"), ("0", ""), ("1", "3")]):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{bar},{count}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    src = read_task_source(tmp_path / "train.csv", [{"name": "bar", "kind": "classification", "columns": ["has_bar"]},
                                                    {"name": "count", "kind": "regression", "columns": ["count"]}],
                           modality="image")
    assert src.modality == "image" and src.data.images.shape == (4, 8, 8, 1)
    assert int(src.data.images[3].max()) == 120, "rows stay in file order"
    np.testing.assert_array_equal(src.tasks["bar"].values, [1, -1, 0, 1])
    np.testing.assert_array_equal(src.tasks["count"].present, [True, True, False, True])


# ------------------------------------------------------------------------------------------------ settings


def test_the_lr_follows_the_width_printed_and_recorded_and_an_explicit_lr_wins(pretrained_dir, text_tasks,
                                                                                 tmp_path, capsys):
    from transferlab.recipes.multitask import MultitaskConfig, train_multitask

    tasks = [{"name": "animal", "kind": "classification", "columns": ["animal"]},
             {"name": "length", "kind": "regression", "columns": ["length"]}]
    data = {"train": str(text_tasks / "both_train.tsv"), "dev": str(text_tasks / "both_dev.tsv")}
    run = tmp_path / "default"
    chosen = train_multitask(MultitaskConfig(init=str(pretrained_dir), tasks=tasks, data=data, steps=4,
                                             batch_size=8, warmup=0.0, schedule="constant", out=str(run),
                                             progress=False))
    # the tiny preset (d_model 128) at fine-tuning's width rule, not BERT-base's 5e-5, exactly as finetune says it
    assert "lr 1e-3 (default for d_model 128; --lr to change it)" in capsys.readouterr().err
    assert chosen["lr"] == pytest.approx(1e-3)
    assert json.loads((run / "run.json").read_text())["lr"] == pytest.approx(1e-3)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in rows if "lr" in r) == pytest.approx(1e-3), "the schedule ran at it"
    given = train_multitask(MultitaskConfig(init=str(pretrained_dir), tasks=tasks, data=data, steps=2, batch_size=8,
                                            lr=2e-4, grad_accum=2, optimizer="adam", progress=False))
    assert given["lr"] == pytest.approx(2e-4) and "default for" not in capsys.readouterr().err
    # Python's multi-task model chooses the same way
    model = transferlab.from_pretrained(pretrained_dir, heads={"animal": 2}, verbose=False).compile()
    assert model.compiled["settings"].lr == pytest.approx(1e-3)


def test_a_grid_trains_joint_and_single_runs_at_the_chosen_lr_and_the_command_line_wins(pretrained_dir, text_tasks,
                                                                                        tmp_path, capsys):
    import yaml

    spec = _spec(tmp_path, text_tasks, pretrained_dir, weighting="equal", seeds=1)
    data = yaml.safe_load(open(spec))
    del data["train"]["lr"]
    data["train"].update(steps=2, warmup=0.0)
    with open(spec, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    assert main(["multitask", spec, "--quiet"]) == 0
    assert capsys.readouterr().err.count("lr 1e-3 (default for d_model 128; --lr to change it)") == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {(r["variant"], r["task"]) for r in rows} == {("joint", None), ("single", "animal"), ("single", "length")}
    assert all(r["lr"] == pytest.approx(1e-3) for r in rows)
    assert "at lr 1e-3" in (tmp_path / "out" / "report.md").read_text()
    data["baselines"] = False
    with open(spec, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    assert main(["multitask", spec, "--quiet", "--lr", "3e-4", "--out", str(tmp_path / "cli")]) == 0
    assert "default for" not in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "cli" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["lr"] == pytest.approx(3e-4)


def test_single_task_baselines_train_with_the_joint_runs_settings(pretrained_dir, text_tasks, tmp_path):
    from transferlab.experiments.multitask import MultitaskSpec
    from transferlab.recipes.settings import MultitaskConfig

    spec = MultitaskSpec.parse(_spec(tmp_path, text_tasks, pretrained_dir, weighting="equal", seeds=1),
                               overrides={"warmup": 0.2, "schedule": "cosine", "max_len": 48})
    runs = spec.plan()
    assert [r.variant for r in runs] == ["joint", "single", "single"]
    for key in MultitaskConfig.train_keys():
        assert len({json.dumps(getattr(r.cfg, key)) for r in runs}) == 1, key
    assert (runs[1].cfg.warmup, runs[1].cfg.schedule, runs[1].cfg.max_len, runs[1].cfg.lr) == (0.2, "cosine", 48, 1e-3)


def test_an_unknown_train_key_is_refused_naming_its_line_and_the_valid_keys(pretrained_dir, text_tasks, tmp_path,
                                                                            capsys):
    import yaml

    from transferlab.recipes.settings import MultitaskConfig

    spec = _spec(tmp_path, text_tasks, pretrained_dir)
    data = yaml.safe_load(open(spec))
    data["train"]["learning_rate"] = 1e-3
    with open(spec, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    line = next(i for i, text in enumerate(open(spec), 1) if "learning_rate" in text)
    assert main(["multitask", spec, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"spec.yaml:{line}: train.learning_rate: unknown key 'learning_rate'" in err, err
    assert all(k in err for k in MultitaskConfig.train_keys())
    assert not (tmp_path / "out").exists(), "nothing trained"


@pytest.mark.parametrize("spec_value,flag,value,problem", [
    ({"lr": 0}, "--lr", "0", "must be above 0, got 0"),
    ({"schedule": "step"}, "--schedule", "step", "schedule 'step'; choose linear, cosine"),
    ({"augment": "lighter"}, "--augment", "lighter", "unknown augmentation recipe 'lighter'"),
    ({"batch_size": 10, "grad_accum": 4}, "--grad-accum", "3", "must be divisible by --grad-accum"),
])
def test_a_bad_value_gets_one_sentence_from_the_spec_and_the_command_line(pretrained_dir, text_tasks, tmp_path,
                                                                           capsys, spec_value, flag, value, problem):
    import yaml

    spec = _spec(tmp_path, text_tasks, pretrained_dir)
    data = yaml.safe_load(open(spec))
    good = dict(data["train"])
    data["train"].update(spec_value)
    with open(spec, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    assert main(["multitask", spec, "--quiet"]) == 2
    err = capsys.readouterr().err
    key = next(iter(spec_value))
    assert f"spec.yaml:" in err and f": train.{key}: " in err and problem in err, err
    data["train"] = good
    with open(spec, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    try:  # a type or choice is refused by the parser (exit 2 as it says), a range when the settings are built
        code = main(["multitask", spec, "--quiet", flag, value])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and flag in err and problem in err, err
    assert not (tmp_path / "out").exists(), "nothing trained"


def test_the_command_line_and_the_spec_take_the_same_training_settings(pretrained_dir, text_tasks, tmp_path):
    from dataclasses import fields

    from transferlab.cli import build_parser
    from transferlab.experiments.multitask import MultitaskSpec
    from transferlab.options import flag_of
    from transferlab.recipes.settings import MultitaskConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["multitask"]
    grid = {"help", "out", "quiet", "executor", "workers", "threads", "address"}
    cli = {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings and a.dest not in grid}
    keys = MultitaskConfig.train_keys()
    assert set(cli) == set(keys)
    assert {cli[k] for k in keys} == {flag_of(f) for f in fields(MultitaskConfig) if f.name in keys}
    # every one of them, written in a spec as its default (or a value where the default is None), is read
    given = {"steps": 2, "epochs": 1.0, "lr": 1e-3, "log_every": 1, "eval_every": 1, "pooling": "mean",
             "augment": "none", "save_every": 5}
    train = {k: given.get(k, MultitaskConfig.defaults().get(k)) for k in keys}
    spec = MultitaskSpec.parse(_spec(tmp_path, text_tasks, pretrained_dir, train=train))
    assert {k: getattr(spec.base, k) for k in keys} == train
    # and the command line reads each the same way
    args = [str(a) for k in keys if not isinstance(train[k], bool) for a in (cli[k], ",".join(train[k])
                                                                            if isinstance(train[k], list)
                                                                            else train[k])]
    parsed = parser.parse_args(["multitask", "spec.yaml", *args])
    assert {k: getattr(parsed, k) for k in keys if not isinstance(train[k], bool)} == \
        {k: v for k, v in train.items() if not isinstance(v, bool)}


def test_light_copies_of_the_multitask_choices_agree_with_the_code_that_uses_them():
    from transferlab.data import multitask
    from transferlab.recipes import settings
    from transferlab.tasks.weighting import WEIGHTINGS

    assert (settings.SAMPLING, settings.MT_KINDS, settings.WEIGHTINGS) == (multitask.SAMPLING, multitask.MT_KINDS,
                                                                          WEIGHTINGS)
