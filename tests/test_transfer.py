"""Head swap, scratch twin, checkpoint round trip, resume, and the Keras-style facade."""

import json

import numpy as np
import pytest
import torch

import transferlab
from transferlab.errors import UserError
from transferlab.training.checkpoint import load_weights, step_checkpoints
from transferlab.recipes.pretrain import PretrainConfig, pretrain
from transferlab.transfer import SparseCategoricalCrossentropy, from_pretrained, load


def test_head_swap_drops_exactly_the_pretraining_head(pretrained_dir):
    saved = load_weights(pretrained_dir)
    model = from_pretrained(pretrained_dir, task="classification", num_labels=3, verbose=False)
    report = model.report
    assert report.dropped == sorted(k for k in saved if k.startswith("heads.lm."))
    assert report.new and all(k.startswith("heads.classifier.") for k in report.new)
    state = model.module.state_dict()
    for k in report.loaded:
        assert torch.equal(state[k], saved[k])
    assert "dropped (pretraining head): heads.lm." in str(report)


def test_scratch_twin_has_same_architecture_but_random_weights(pretrained_dir):
    pre = from_pretrained(pretrained_dir, num_labels=2, verbose=False).module.state_dict()
    scratch = from_pretrained(pretrained_dir, num_labels=2, init="scratch", verbose=False).module.state_dict()
    assert pre.keys() == scratch.keys()
    assert all(pre[k].shape == scratch[k].shape for k in pre)
    assert not torch.equal(pre["backbone.wte.weight"], scratch["backbone.wte.weight"])


def test_fit_evaluate_predict_save_load(pretrained_dir, labeled_files, tmp_path):
    train, dev = labeled_files
    model = transferlab.from_pretrained(pretrained_dir, num_labels=2, label_names=["neg", "pos"], verbose=False)
    model.compile(lr=3e-3, metrics=["accuracy", "f1"], warmup=0.0)
    history = model.fit(str(train), validation_data=str(dev), epochs=3, batch_size=16, verbose=False,
                        callbacks=[transferlab.EarlyStopping(monitor="val_loss", patience=5)])
    assert len(history.history["loss"]) == 3 and len(history.history["val_accuracy"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(str(dev))
    assert set(result) == {"loss", "accuracy", "f1"}
    preds = model.predict(["the cat sat on the mat .", "it was very red ."])
    assert preds.shape == (2,) and set(preds.tolist()) <= {0, 1}
    model.save(tmp_path / "ft")
    again = load(tmp_path / "ft")
    assert again.module.label_names == ["neg", "pos"]
    np.testing.assert_allclose(again.evaluate(str(dev))["loss"], result["loss"], rtol=1e-5)


def test_from_logits_trap_is_explained(pretrained_dir):
    model = from_pretrained(pretrained_dir, num_labels=2, verbose=False)
    with pytest.raises(UserError, match="expects probabilities"):
        model.compile(loss=SparseCategoricalCrossentropy(from_logits=False))
    with pytest.raises(UserError, match="expects probabilities"):
        model.compile(loss=torch.nn.NLLLoss())
    model.compile(loss=torch.nn.CrossEntropyLoss())  # fine: takes logits
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True))


def test_metric_must_fit_task(pretrained_dir):
    model = from_pretrained(pretrained_dir, task="regression", verbose=False)
    with pytest.raises(UserError, match="accuracy"):
        model.compile(metrics=["accuracy"])


def test_pretrain_refuses_existing_run_and_resumes(corpus_dir, tmp_path):
    cfg = PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "run"), seq_len=32, batch_size=8, steps=8,
                         save_every=4, progress=False, eval_batches=2, eval_every=4)
    pretrain(cfg)
    uninterrupted = load_weights(tmp_path / "run" / "final")
    with pytest.raises(UserError, match="--resume auto"):
        pretrain(cfg)
    # simulate an interruption after step 4: drop the later checkpoint and the final model
    import shutil

    shutil.rmtree(tmp_path / "run" / "final")
    shutil.rmtree(step_checkpoints(tmp_path / "run")[-1])
    assert step_checkpoints(tmp_path / "run")[-1].name == "step-0000004"
    pretrain(cfg, resume=True)
    resumed = load_weights(tmp_path / "run" / "final")
    for k in uninterrupted:
        torch.testing.assert_close(resumed[k], uninterrupted[k], rtol=1e-5, atol=1e-6)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "no duplicated rows after resume"
    with pytest.raises(UserError, match="different settings"):
        pretrain(PretrainConfig(**{**cfg.__dict__, "model": "mini"}), resume=True)


def test_unknown_pooling_is_refused_when_the_head_is_built(pretrained_dir):
    with pytest.raises(UserError, match="unknown pooling 'max'; choose cls, mean, last"):
        from_pretrained(pretrained_dir, num_labels=2, pooling="max", verbose=False)
