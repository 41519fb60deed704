"""The two inference and fine-tuning shortcuts of issue 20 give what the plain path gives: a classifier that pools
one position ("cls", "last") computes its last block at that position alone, and bf16 inference holds the weights
in bf16 instead of casting them on every call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.data.batches import EncodedExamples
from transferlab.evaluation.predict import predict_logits
from transferlab.models import build_backbone, preset
from transferlab.objectives.classification import SequenceClassifier
from transferlab.training.precision import autocast, inference_weights

VOCAB = 50


def _classifier(family: str, pooling: str, seed: int = 0, **overrides) -> SequenceClassifier:
    torch.manual_seed(seed)
    cfg = preset("tiny", family, VOCAB, dropout=0.0, max_len=32, **overrides)
    return SequenceClassifier(build_backbone(cfg), 3, pooling=pooling)


def _padded_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (4, 12), generator=g)
    lengths = torch.tensor([12, 7, 3, 10])
    attention = (torch.arange(12)[None, :] < lengths[:, None]).long()  # right padding
    types = (torch.arange(12)[None, :] >= 6).long().expand(4, -1) * attention
    return {"input_ids": ids * attention, "attention": attention, "token_type_ids": types,
            "labels": torch.tensor([0, 1, 2, 1])}


def _full_path(model: SequenceClassifier, batch: dict) -> dict:
    """The classifier's forward through every position of every block (what it did before the shortcut)."""
    hidden, attention = model.backbone.features(batch)
    logits = model.heads["classifier"](hidden, attention).float()
    return {"logits": logits, "loss": torch.nn.functional.cross_entropy(logits, batch["labels"])}


@pytest.mark.parametrize("family,pooling,overrides", [
    ("encoder", "cls", {}),
    ("encoder", "cls", {"norm": "post"}),
    ("encoder", "cls", {"position": "rotary"}),
    ("encoder", "last", {}),
    ("decoder", "last", {}),
    ("decoder", "last", {"position": "rotary"}),
])
def test_one_position_last_block_matches_the_full_pass(family, pooling, overrides):
    """Logits, loss and every gradient of the shortcut equal the full pass's (fp32, to float rounding), padding
    included; in eval mode and in training mode (dropout 0, so both draw nothing)."""
    model, batch = _classifier(family, pooling, **overrides), _padded_batch()
    model.eval()
    with torch.no_grad():
        fast, full = model(batch)["logits"], _full_path(model, batch)["logits"]
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)

    model.train()
    grads = []
    for forward in (lambda: model(batch), lambda: _full_path(model, batch)):
        model.zero_grad(set_to_none=True)
        forward()["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_mean_pooling_keeps_every_position():
    """Mean pooling reads every position, so its forward is the full pass itself (bit for bit)."""
    model, batch = _classifier("encoder", "mean").eval(), _padded_batch()
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"], _full_path(model, batch)["logits"])


def _examples(n: int = 20, seed: int = 1) -> EncodedExamples:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, VOCAB, size=int(rng.integers(3, 16))).tolist() for _ in range(n)]
    return EncodedExamples(ids, [[0] * len(s) for s in ids], rng.integers(0, 3, size=n))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bf16_weights_predict_what_per_call_autocast_predicts(pooling):
    """Held bf16 weights give the logits per-call autocast gives (the same bf16 operands: stated tolerance 1e-6,
    measured equal here) and the same predictions; fp32 predictions agree too, with logits within bf16
    rounding (0.05 on these tiny random logits)."""
    model, examples = _classifier("encoder", pooling).eval(), _examples()
    held = predict_logits(model, examples, batch_size=8, precision="bf16")
    per_call = []
    with torch.no_grad():
        for start in range(0, len(examples), 8):
            batch = examples.collate(range(start, min(start + 8, len(examples))))
            batch.pop("labels")
            with autocast("bf16"):
                per_call.append(model(batch)["logits"].float())
    per_call = torch.cat(per_call)
    torch.testing.assert_close(held, per_call, rtol=0, atol=1e-6)
    fp32 = predict_logits(model, examples, batch_size=8, precision="fp32")
    torch.testing.assert_close(held, fp32, rtol=0, atol=0.05)
    assert torch.equal(held.argmax(-1), fp32.argmax(-1))


def test_inference_weights_puts_the_fp32_weights_back():
    """A model evaluated during training keeps training on its own fp32 weights: same objects, same values."""
    model = _classifier("encoder", "mean")
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad(), inference_weights(model, "bf16"):
        assert model.heads["classifier"].out.weight.dtype == torch.bfloat16
        assert model.backbone.wte.weight.dtype == torch.float32  # looked up, not multiplied: autocast keeps fp32
    for name, (param, value) in before.items():
        assert param is dict(model.named_parameters())[name] and param.dtype == torch.float32
        assert torch.equal(param.detach(), value), name
    model(_padded_batch())["loss"].backward()
    opt.step()  # the optimizer still holds (and updates) the parameters


def test_inference_weights_leaves_a_weight_tied_to_an_embedding_fp32():
    """A Linear whose weight is also an embedding table (a tied output layer) is left as it is: casting it would
    change the embedding lookups."""
    emb, out = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    out.weight = emb.weight
    model = torch.nn.Sequential(emb, out)
    with inference_weights(model, "bf16"):
        assert out.weight.dtype == torch.float32
    with inference_weights(model, "fp32"):
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_int8_export_of_a_last_token_classifier_runs_the_shortcut():
    """A decoder classifier (last-token pooling) exported to int8 keeps its packed weights through the
    one-position last block, and stays within the int8 tolerance the docs state (logits within 0.02 of fp32)."""
    from transferlab.tasks.quantize import quantize_int8

    model, batch = _classifier("decoder", "last").eval(), _padded_batch()
    quantized = quantize_int8(model)
    with torch.no_grad():
        fp32, int8 = model(batch)["logits"], quantized(batch)["logits"]
    assert (int8 - fp32).abs().max() < 0.02
