"""Muon for the trunk's matrices, AdamW for the rest: the grouping rule, the combined optimizer, and the option."""

from __future__ import annotations

import json

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.models import build_backbone, image_preset, preset
from transferlab.objectives import CausalLM, DenoisingLM, MaskedLM
from transferlab.objectives.classification import SequenceClassifier
from transferlab.training.optim import (build_optimizer, build_scheduler, discriminative_param_groups,
                                        muon_param_groups, param_groups)


def _modules():
    yield "mlm", MaskedLM(build_backbone(preset("tiny", "encoder", 100, max_len=64, position="learned")))
    yield "clm", CausalLM(build_backbone(preset("tiny", "decoder", 100, max_len=64)))
    yield "bart", DenoisingLM(build_backbone(preset("tiny", "encoder_decoder", 100, max_len=64)))
    yield "classifier", SequenceClassifier(build_backbone(preset("tiny", "encoder", 100, max_len=64)), 3)
    yield "vit", SequenceClassifier(build_backbone(image_preset("vit-tiny")), 10)


@pytest.mark.parametrize("name,module", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_parameter_lands_in_exactly_one_group_by_the_rule(name, module):
    muon, adamw = muon_param_groups(module, param_groups(module, 0.01))
    placed = [id(p) for g in muon + adamw for p in g["params"]]
    assert sorted(placed) == sorted(id(p) for p in module.parameters()) and len(set(placed)) == len(placed)
    in_muon = {id(p) for g in muon for p in g["params"]}
    blocks = {id(p) for b in module.backbone.blocks for p in b.parameters()}
    for pname, p in module.named_parameters():
        # the rule: Muon takes the 2-D weights inside the backbone's blocks, nothing else
        assert (id(p) in in_muon) == (p.ndim == 2 and id(p) in blocks), pname
        if pname.startswith("heads.") or any(k in pname for k in ("wte", "wpe", "wtt", "embed")):
            assert id(p) not in in_muon, pname  # embeddings, position tables, patch stems and heads: AdamW
    assert all(g["weight_decay"] == 0.01 for g in muon)  # matrices keep BERT's decay split


def test_group_options_carry_over_to_both_halves():
    module = _modules().__next__()[1]
    layers = [list(module.backbone.h[0].parameters()), list(module.backbone.h[1].parameters())]
    muon, adamw = muon_param_groups(module, discriminative_param_groups(layers, 1e-3, 0.01, factor=2.0))
    assert sorted(g["lr"] for g in muon) == [5e-4, 1e-3]
    assert sorted({g["lr"] for g in adamw}) == [5e-4, 1e-3]


def test_combined_optimizer_trains_follows_the_schedule_and_round_trips():
    torch.manual_seed(0)
    module = SequenceClassifier(build_backbone(preset("tiny", "encoder", 100, max_len=64)), 2)
    batch = {"input_ids": torch.randint(5, 100, (16, 12)), "labels": torch.randint(0, 2, (16,))}
    opt = build_optimizer(module, 1e-3, 0.01, name="muon")
    sched = build_scheduler(opt, "linear", 10, 2)
    losses = []
    for _ in range(6):
        loss = module(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    # the scheduler's LR reaches both inner optimizers
    assert opt.muon.param_groups[0]["lr"] == opt.adamw.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 4 / 8))
    saved = opt.state_dict()
    again = build_optimizer(module, 1e-3, 0.01, name="muon")
    again.load_state_dict(saved)
    assert len(again.state) == len(opt.state) == sum(1 for p in module.parameters())
    for p in module.parameters():
        for k, v in opt.state[p].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(again.state[p][k]))
    with pytest.raises(KeyError):
        again.load_state_dict(torch.optim.AdamW(module.parameters()).state_dict())


def test_muon_without_trainable_trunk_matrices_is_refused():
    module = SequenceClassifier(build_backbone(preset("tiny", "encoder", 100, max_len=64)), 2)
    for p in module.backbone.parameters():
        p.requires_grad_(False)  # a linear probe
    with pytest.raises(UserError, match="--optimizer adamw"):
        build_optimizer(module, 1e-3, name="muon")


def test_pretrain_and_finetune_take_optimizer_muon_and_resume_keeps_it(corpus_dir, labeled_files, tmp_path, capsys):
    args = ["pretrain", "--corpus", corpus_dir, "--steps", 4, "--seq-len", 32, "--batch-size", 8, "--save-every", 2,
            "--out", tmp_path / "run", "--quiet"]  # muon: text pretraining's default
    assert main([str(a) for a in args]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["optimizer"] == "muon"
    saved = torch.load(tmp_path / "run" / "step-0000004" / "trainer_state" / "optimizer.pt", weights_only=True)
    assert set(saved) == {"muon", "adamw"}
    more = [str(a) for a in args] + ["--resume", "auto"]
    more[more.index("--steps") + 1] = "6"
    assert main(more + ["--optimizer", "adamw"]) == 2  # resuming with another optimizer is refused, naming it
    assert "optimizer='muon'" in capsys.readouterr().err
    assert main(more) == 0
    train, dev = labeled_files
    assert main([str(a) for a in ["finetune", "--init", tmp_path / "run" / "final", "--train", train, "--dev", dev,
                                  "--out", tmp_path / "ft", "--epochs", 1, "--lr", 1e-3, "--optimizer", "muon",
                                  "--quiet"]]) == 0
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["optimizer"] == "muon"
    with pytest.raises(SystemExit):
        main(["pretrain", "--corpus", str(corpus_dir), "--out", str(tmp_path / "x"), "--optimizer", "lion"])
