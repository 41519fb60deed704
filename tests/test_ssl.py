"""Self-supervised images: SimCLR, BYOL and MAE as objectives (losses, the moving-average target, masking), the
seeded views, the kNN monitor and protocols, what transfer keeps, the compare methods, and the bad input a user
meets. Everything runs on tiny models and a few dozen 28x28 images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import bars, bars_npz
from transferlab.cli import main
from transferlab.data.augment import Augment, augment_config
from transferlab.data.batches import ExampleBatches, ImageExamples
from transferlab.errors import UserError
from transferlab.models import build_backbone, image_preset
from transferlab.objectives import BYOL, MaskedAutoencoder, PatchMasking, SimCLR, byol_momentum, nt_xent
from transferlab.training.checkpoint import load_weights


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: a second OpenMP thread buys nothing and, on a loaded 2-core machine, its barrier waits made a
    # 36-step test take 90 s instead of 3.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return bars_npz(tmp_path_factory.mktemp("ssl") / "bars.npz", (96, 32, 32))


def pretrain_cli(npz, out, objective: str, model: str, *extra: str) -> int:
    return main(["pretrain", "--objective", objective, "--data", str(npz), "--model", model, "--steps", "4",
                 "--batch-size", "16", "--eval-every", "2", "--eval-batches", "1", "--precision", "fp32",
                 "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def checkpoints(npz, tmp_path_factory):
    """RUN/final of a few steps of each objective, from the CLI."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for objective, model in (("simclr", "resnet-tiny"), ("byol", "resnet-tiny"), ("mae", "vit-tiny")):
        assert pretrain_cli(npz, root / objective, objective, model) == 0
        out[objective] = root / objective / "final"
    return out


def tiny(family: str = "resnet"):
    return build_backbone(image_preset("resnet-tiny" if family == "resnet" else "vit-tiny"))


def two_views(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ the losses


def test_nt_xent_equals_a_brute_force_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), 0.3
    z = F.normalize(torch.cat([z1, z2]), dim=-1).double()
    n, losses = 5, []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = {j: float(z[i] @ z[j]) / t for j in range(2 * n) if j != i}
        losses.append(-sims[positive] + math.log(sum(math.exp(s) for s in sims.values())))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_byol_momentum_schedule_is_exact_and_ends_at_one():
    assert byol_momentum(0, 100, 0.99) == pytest.approx(0.99, abs=1e-15)
    assert byol_momentum(50, 100, 0.99) == pytest.approx(1 - 0.01 / 2, abs=1e-15)
    assert byol_momentum(100, 100, 0.99) == 1.0
    for k in (1, 17, 63):
        assert byol_momentum(k, 100, 0.996) == pytest.approx(1 - 0.004 * (math.cos(math.pi * k / 100) + 1) / 2,
                                                             abs=1e-15)


def test_the_loop_runs_byols_own_callback_and_the_ema_update_is_exact():
    """With a vanishing lr (1e-30: the settings refuse 0) the online network stays put, so after K steps the target is
    exactly online + (target_0 - online) * prod(tau_k): the module's callback ran once per step with the schedule."""
    from transferlab.training.loop import TrainConfig, train

    torch.manual_seed(0)
    module = BYOL(tiny(), momentum=0.9)
    with torch.no_grad():  # move the target away from the online network, so the update has something to do
        for p in module.heads["target"].parameters():
            p.add_(0.5)
    online, target = module.online_and_target()
    online0 = [p.detach().clone() for p in online]
    target0 = [p.detach().clone() for p in target]
    batch = {"views": two_views(8)}

    class Fixed:
        steps_per_epoch = None

        def batch(self, i):
            return batch

    steps = 3
    train(module, Fixed(), TrainConfig(steps=steps, lr=1e-30, weight_decay=0.0, warmup=0, precision="fp32",
                                       progress=False, clip=0.0))
    shrink = math.prod(byol_momentum(k, steps, 0.9) for k in range(1, steps + 1))
    for o0, o, t0, t in zip(online0, online, target0, target):
        torch.testing.assert_close(o, o0, rtol=0, atol=1e-20)
        torch.testing.assert_close(t, o0 + (t0 - o0) * shrink, rtol=1e-6, atol=1e-6)


def test_byols_target_gets_no_gradient_and_no_optimizer_slot():
    from transferlab.training.optim import build_optimizer

    module = BYOL(tiny())
    module(batch := {"views": two_views(4)})["loss"].backward()
    target = list(module.heads["target"].parameters())
    assert target and all(p.grad is None and not p.requires_grad for p in target)
    assert all(p.grad is not None for p in module.backbone.parameters())
    assert all(p.grad is not None for p in module.heads["predictor"].parameters())
    in_optimizer = {id(p) for g in build_optimizer(module, 1e-3).param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in target}
    assert batch["views"].shape[1] == module.count(batch) == 4  # images, not views, are counted


def test_mae_masks_each_image_its_own_patches_from_the_seed():
    masking = PatchMasking(49, 0.75)
    pixels = torch.zeros(3, 1, 28, 28)
    a = masking({"pixels": pixels}, torch.Generator().manual_seed(1))
    b = masking({"pixels": pixels}, torch.Generator().manual_seed(1))
    assert a["visible"].shape == (3, 12) and a["masked"].shape == (3, 37)  # int(49 * 0.25) visible, as MAE
    assert torch.equal(a["visible"], b["visible"]) and not torch.equal(a["visible"][0], a["visible"][1])
    for v, m in zip(a["visible"], a["masked"]):
        assert sorted(v.tolist() + m.tolist()) == list(range(49))


def masked_batch():
    """A tiny MAE, two random 28x28 images and their seeded masks (49 patches, 12 visible)."""
    torch.manual_seed(0)
    module = MaskedAutoencoder(tiny("vit"))
    pixels = torch.randn(2, 1, 28, 28)
    return module, pixels, module.corruption()({"pixels": pixels}, torch.Generator().manual_seed(0))


def test_mae_encodes_exactly_the_visible_patches():
    module, pixels, batch = masked_batch()
    seen = []
    module.backbone.h[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    module(batch)
    tokens = module.backbone.embed(pixels)  # (B, 49, d)
    expected = torch.stack([tokens[i, batch["visible"][i]] for i in range(2)])  # (B, 12, d)
    assert seen[0].shape == (2, 12, 128)
    torch.testing.assert_close(seen[0], expected)


def test_mae_loss_covers_only_the_masked_patches():
    module, pixels, batch = masked_batch()
    rows = []
    module.heads["decoder"].pred.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[1]))
    with torch.no_grad():
        loss = float(module(batch)["loss"])
    assert rows == [37]  # the prediction layer runs on the masked positions only
    error = (module.reconstruct(batch) - module.targets(pixels)).pow(2).mean(-1)  # (B, N) per patch
    masked = torch.zeros(2, 49, dtype=torch.bool).scatter_(1, batch["masked"], True)
    assert loss == pytest.approx(float(error[masked].mean()), rel=1e-5)
    assert loss != pytest.approx(float(error.mean()), rel=1e-3)
    target = module.targets(pixels)  # normalised per patch: zero mean, unit (sample) variance
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 49), atol=1e-5, rtol=0)


def test_mae_on_a_resnet_is_refused_with_the_fix():
    with pytest.raises(UserError, match="vit-tiny, vit-mini or vit-small"):
        MaskedAutoencoder(tiny("resnet"))


# ------------------------------------------------------------------------------------------------ views


def test_the_same_seed_gives_the_same_views_and_each_view_differs():
    x, y = bars(12, 0)
    examples = ImageExamples(x[..., None], y, (0.2,), (0.3,), Augment(augment_config("simclr")), views=2)
    batches = ExampleBatches(examples, batch_size=6, seed=3)
    first, again, later = batches.batch(5), batches.batch(5), batches.batch(6)
    assert first["views"].shape == (2, 6, 1, 28, 28) and "pixels" not in first
    assert torch.equal(first["views"], again["views"])  # a resumed run sees these views again
    assert not torch.equal(first["views"][0], first["views"][1])
    assert not torch.equal(first["views"], later["views"])
    cfg = augment_config("simclr")
    assert not cfg.hflip and not cfg.vflip and cfg.crop_scale[0] > 0.08  # no flips, no ImageNet-sized crops


def test_few_pretraining_steps_lower_each_objectives_loss():
    for module in (SimCLR(tiny()), BYOL(tiny()), MaskedAutoencoder(tiny("vit"))):
        torch.manual_seed(0)
        x, _ = bars(8, 1, noise=1)  # no background noise: MAE cannot learn to predict noise
        pixels = (torch.from_numpy(x)[:, None].float() / 255 - 0.2) / 0.3
        if module.views:
            g = torch.Generator().manual_seed(0)
            batch = {"views": torch.stack([pixels + 0.3 * torch.randn(pixels.shape, generator=g) for _ in "ab"])}
        else:
            batch = module.corruption()({"pixels": pixels}, torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=2e-3)
        callbacks = module.callbacks()
        losses = []
        for step in range(10):
            loss = module(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            state = type("State", (), {"step": step + 1, "max_steps": 10})()
            for cb in callbacks:
                cb.on_step_end(state, {})
        assert np.mean(losses[-3:]) < 0.97 * losses[0], (module.kind, losses)


# ------------------------------------------------------------------------------------------------ kNN


def test_knn_on_a_separable_toy_set_is_perfect():
    from transferlab.evaluation.protocols import embedding_std, knn_evaluate, knn_scores

    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 16) * 5
    labels = torch.arange(3).repeat_interleave(30)
    feats = centres[labels] + 0.3 * torch.randn(90, 16, generator=g)
    queries = centres[labels] + 0.3 * torch.randn(90, 16, generator=g)
    assert knn_evaluate(feats, labels, queries, labels, 3)["accuracy"] == 1.0
    assert knn_evaluate(feats, labels, feats, labels, 3, exclude_self=True)["accuracy"] == 1.0
    scores = knn_scores(feats, labels, queries[:4], 3)
    torch.testing.assert_close(scores.sum(1), torch.ones(4))
    # a collapsed embedding has no spread; one spread over the sphere about 1/sqrt(d)
    assert embedding_std(torch.ones(50, 16)) == pytest.approx(0.0, abs=1e-6)
    assert embedding_std(torch.randn(4000, 16, generator=g)) == pytest.approx(1 / math.sqrt(16), rel=0.05)


# ------------------------------------------------------------------------------------------------ end to end


def test_pretraining_monitors_knn_and_spread_and_plot_draws_them(checkpoints, tmp_path):
    from transferlab.experiments.plots import plot_runs

    for objective, final in checkpoints.items():
        rows = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["split"] == "eval"]
        assert [r["step"] for r in evals] == [2, 4], objective
        for r in evals:
            assert 0 <= r["knn_accuracy"] <= 1 and 0 < r["embedding_std"] < 1 and math.isfinite(r["loss"])
        config = json.loads((final / "config.json").read_text())
        assert config["task"]["kind"] == objective
        assert config["pretraining"]["augment"] == augment_config(objective).to_dict() | {
            "crop_scale": list(augment_config(objective).crop_scale),
            "crop_ratio": list(augment_config(objective).crop_ratio)}
    png = plot_runs([f.parent for f in checkpoints.values()], tmp_path / "curves.png",
                    metrics=["loss", "knn_accuracy", "embedding_std"])
    assert png.stat().st_size > 10_000


def test_transfer_drops_exactly_the_pretraining_only_modules(checkpoints):
    from transferlab.tasks.factory import load_model, transfer_module

    for objective, final in checkpoints.items():
        weights = load_weights(final)
        module, _, report = transfer_module(final, {"kind": "classification", "num_labels": 2})
        assert report.dropped == sorted(k for k in weights if k.startswith("heads.")), objective
        assert report.loaded == sorted(k for k in weights if k.startswith("backbone."))
        assert report.new == ["heads.classifier.out.bias", "heads.classifier.out.weight"]
        pretraining_only = {k.split(".")[1] for k in report.dropped}
        assert pretraining_only == {"simclr": {"projector"}, "byol": {"projector", "predictor", "target"},
                                    "mae": {"decoder"}}[objective]
        rebuilt, _, _ = load_model(final)  # config.json rebuilds the pretraining module, heads and settings
        assert rebuilt.kind == objective and rebuilt.state_dict().keys() == weights.keys()
    mask_token = [k for k in load_weights(checkpoints["mae"]) if "mask_token" in k]
    assert mask_token == ["heads.decoder.mask_token"]


def test_an_interrupted_byol_run_resumes_to_the_same_weights(npz, tmp_path):
    """The target network is saved with the step checkpoint and its momentum is a function of the step: a run
    cut at step 2 and resumed ends where an uninterrupted one does."""
    from transferlab.recipes.pretrain import PretrainConfig, pretrain
    from transferlab.training.callbacks import Callback

    def config(out):
        return PretrainConfig(objective="byol", data=str(npz), model="resnet-tiny", steps=4, batch_size=16,
                              eval_batches=1, eval_every=10, save_every=2, precision="fp32", progress=False,
                              out=str(out))

    class StopAt2(Callback):
        def on_step_end(self, state, logs):
            if state.step == 2:
                raise KeyboardInterrupt

    whole = pretrain(config(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        pretrain(config(tmp_path / "cut"), callbacks=[StopAt2()])
    resumed = pretrain(config(tmp_path / "cut"), resume=True)
    a, b = load_weights(whole), load_weights(resumed)
    assert any(k.startswith("heads.target.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_compare_runs_knn_and_logistic_probe_side_by_side(checkpoints, npz, tmp_path):
    from transferlab.experiments.compare import run_compare

    spec = {"name": "ssl", "checkpoints": [{"name": o, "path": str(p)} for o, p in checkpoints.items()],
            "task": {"train": str(npz), "dev": str(npz), "test": str(npz)},
            "methods": ["knn", {"logistic-probe": {"C": 1.0}}], "budgets": [20], "seeds": 1}
    result = run_compare(spec, tmp_path / "grid", progress=False)
    rows = result["rows"]
    assert {(r["checkpoint"], r["kind"], r["budget"]) for r in rows} == {
        (o, k, b) for o in checkpoints for k in ("knn", "logistic-probe") for b in ("20",)}
    for r in rows:
        assert set(r["test"]) >= {"accuracy", "roc_auc"} and len(r["epochs"]) == 1
        width = 128 if r["checkpoint"] == "mae" else 64  # vit-tiny, resnet-tiny
        assert r["trained_params"] == (0 if r["kind"] == "knn" else width + 1)  # nothing, or one logistic unit
    assert "knn (byol)" in (tmp_path / "grid" / "report.md").read_text()


def test_protocols_command_evaluates_a_checkpoint_on_a_labeled_set(checkpoints, npz, tmp_path, capsys):
    out = tmp_path / "protocols"
    assert main(["protocols", "--model", str(checkpoints["simclr"]), "--train", str(npz), "--protocols",
                 "knn,logistic-probe", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"knn", "logistic-probe"}
    logistic = next(r for r in rows if r["kind"] == "logistic-probe")
    assert [e["C"] for e in logistic["epochs"]] == [0.01, 0.1, 1.0, 10.0]  # C chosen on dev
    assert main(["protocols", "--model", str(checkpoints["simclr"]), "--train", str(npz), "--protocols", "svm",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown protocol(s) svm" in capsys.readouterr().err


def test_protocols_training_options_are_the_grid_settings_declared_once(tmp_path, capsys, monkeypatch):
    import transferlab.experiments.protocols as protocols

    given = {}
    monkeypatch.setattr(protocols, "run_protocols", lambda *a, **k: given.update(a[8] if len(a) > 8 else {}))
    base = ["protocols", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "t"), "--quiet"]
    assert main(base + ["--lr", "1e-3", "--epochs", "2", "--batch-size", "16", "--augment", "light"]) == 0
    assert given == {"lr": 1e-3, "epochs": 2.0, "batch_size": 16, "augment": "light"}
    for args, message in ((["--lr", "-1"], "--lr must be above 0, got -1.0"),
                          (["--epochs", "0"], "--epochs must be above 0, got 0.0")):
        assert main(base + args) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["protocols", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr X peak learning rate [default: 5e-5 for text, 1e-3 for images and audio]" in text


@pytest.mark.parametrize("objective, model, extra, message", [
    ("simclr", "resnet-tiny", ["--batch-size", "4"], "too few for simclr"),
    ("mae", "vit-tiny", ["--mask-ratio", "1.0"], "strictly between 0 and 1"),
    ("mae", "vit-tiny", ["--mask-ratio", "0"], "strictly between 0 and 1"),
    ("mae", "resnet-tiny", [], "MAE masks patches of a Vision Transformer"),
    ("mae", "vit-tiny", ["--image-size", "30"], "patch_size=4 does not divide"),
    ("byol", "resnet-tiny", ["--momentum", "1.5"], "weight in [0, 1]"),
    ("byol", "resnet-tiny", ["--momentum", "-0.1"], "weight in [0, 1]"),
    ("simclr", "resnet-tiny", ["--augment", "none,blur=0"], "the two views are identical"),
    ("byol", "resnet-tiny", ["--augment", "none"], "the two views are identical"),
    ("simclr", "resnet-tiny", ["--mask-ratio", "0.5"], "--mask-ratio do(es) not apply to --objective simclr"),
    ("simclr", "resnet-tiny", ["--temperature", "0"], "must be positive"),
])
def test_bad_self_supervised_settings_are_refused_before_anything_is_written(npz, tmp_path, capsys, objective,
                                                                              model, extra, message):
    out = tmp_path / "run"
    argv = ["pretrain", "--objective", objective, "--data", str(npz), "--model", model, "--steps", "2", "--out",
            str(out), "--quiet", *extra]
    if "--batch-size" not in extra:
        argv += ["--batch-size", "16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
