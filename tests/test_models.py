"""Every backbone and head: right shapes, no NaN, every parameter receives a gradient."""

import pytest
import torch

from transferlab.errors import UserError
from transferlab.models import ModelConfig, build_backbone, preset
from transferlab.objectives import CausalLM, DenoisingLM, MaskedLM, MassLM
from transferlab.tasks import SequenceClassifier

FAMILIES = ["encoder", "decoder", "encoder_decoder", "embedding", "rnn"]


def tiny(family: str, position: str = "learned") -> ModelConfig:
    return preset("tiny", family, vocab_size=50, max_len=64, dropout=0.0, position=position)


def batch(B=3, T=10, vocab=50):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, vocab, (B, T), generator=g)
    attention = torch.ones(B, T, dtype=torch.long)
    attention[0, 7:] = 0
    return ids, attention


@pytest.mark.parametrize("position", ["learned", "rotary"])
@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_shapes_and_padding_invariance(family, position):
    model = build_backbone(tiny(family, position)).eval()
    ids, attention = batch()
    hidden = model(ids, attention=attention)
    assert hidden.shape == (3, 10, 128) and torch.isfinite(hidden).all()
    # the real tokens of a padded row do not depend on what the padding holds
    ids2 = ids.clone()
    ids2[0, 7:] = 9
    torch.testing.assert_close(model(ids2, attention=attention)[0, :7], hidden[0, :7])


@pytest.mark.parametrize("family", ["encoder", "decoder", "encoder_decoder"])
def test_rotary_attention_sees_relative_positions_only(family):
    """Shifting every position by the same amount changes nothing with rotary positions (scores depend on the
    offset between query and key), and changes the output with a learned position table."""
    ids, _ = batch()
    shift = torch.arange(10) + 17
    for position, same in (("rotary", True), ("learned", False)):
        model = build_backbone(tiny(family, position)).eval()
        if family == "encoder_decoder":
            out, shifted = model(ids), model(ids, positions=shift, decoder_positions=shift)
        else:
            out, shifted = model(ids), model(ids, positions=shift)
        assert torch.allclose(out, shifted, atol=1e-5) == same, position
    assert "wpe.weight" not in build_backbone(tiny(family, "rotary")).state_dict(), "no position table to train"


def test_rotary_needs_an_even_head_size():
    with pytest.raises(UserError, match="head size .* must be even"):
        preset("tiny", "encoder", 50, d_model=126, n_head=2, position="rotary")


def test_dropout_rate_gradient_and_seed():
    from transferlab.models.layers import Dropout

    drop = Dropout(0.1)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.002
    assert float(y.detach().max()) == pytest.approx(1 / 0.9) and float(y.detach().mean()) == pytest.approx(1, abs=3e-3)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.9)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y), "the mask comes from torch's seeded generator"
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_dropout_computes_what_sdpa_computes(causal):
    """The training path with dropout (explicit scores, softmax, cheaper dropout) is SDPA's math; with a rate that
    keeps every weight it gives SDPA's output, padding mask or causal pattern alike."""
    from transferlab.models.layers import Attention

    torch.manual_seed(0)
    attn = Attention(64, 4, dropout=1e-9)  # rounds to a threshold of 0: nothing is dropped
    x = torch.randn(3, 10, 64)
    mask = None if causal else (torch.arange(10) < 7)[None, None, None, :].expand(3, 1, 1, 10)
    expected = attn.eval()(x, mask=mask, is_causal=causal)
    torch.testing.assert_close(attn.train()(x, mask=mask, is_causal=causal), expected)
    attn.dropout = 0.5
    assert not torch.allclose(attn(x, mask=mask, is_causal=causal), expected)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_decoder_is_causal(position):
    model = build_backbone(tiny("decoder", position)).eval()
    ids, _ = batch()
    changed = ids.clone()
    changed[:, 6:] = 8
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])


def task_modules():
    yield "mlm", MaskedLM(build_backbone(tiny("encoder")))
    yield "mlm-rotary", MaskedLM(build_backbone(tiny("encoder", "rotary")))
    yield "clm-rotary", CausalLM(build_backbone(tiny("decoder", "rotary")))
    yield "bart-rotary", DenoisingLM(build_backbone(tiny("encoder_decoder", "rotary")))
    yield "mlm-bert-head", MaskedLM(build_backbone(preset("tiny", "encoder", 50, max_len=64, dropout=0.0, lm_head="bert")))
    yield "clm", CausalLM(build_backbone(tiny("decoder")))
    yield "bart", DenoisingLM(build_backbone(tiny("encoder_decoder")))
    yield "mass", MassLM(build_backbone(preset("tiny", "encoder_decoder", 50, max_len=64, dropout=0.0, norm="post",
                                               lm_head="bert", n_dec_layer=1)))
    for family in FAMILIES:
        yield f"cls-{family}", SequenceClassifier(build_backbone(tiny(family)), 3)
        yield f"reg-{family}", SequenceClassifier(build_backbone(tiny(family)), 1, "regression")


@pytest.mark.parametrize("name,module", list(task_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_parameter_gets_a_gradient(name, module):
    ids, attention = batch()
    b = {"input_ids": ids, "attention": attention}
    if name.startswith("mlm"):
        b["labels"] = torch.where(torch.rand(ids.shape) < 0.5, ids, torch.full_like(ids, -100))
        b["labels"][0, 0] = ids[0, 0]
    elif name.split("-")[0] in ("bart", "mass"):  # decoder reads 4 target tokens at their own positions (MASS-style)
        b["decoder_input_ids"], b["labels"] = ids[:, 2:6], ids[:, 3:7]
        b["decoder_positions"] = torch.arange(3, 7).expand(3, 4)
    elif name.startswith("cls"):
        b["labels"] = torch.tensor([0, 1, 2])
    elif name.startswith("reg"):
        b["labels"] = torch.tensor([0.5, 1.0, 4.0])
    b["token_type_ids"] = torch.zeros_like(ids)
    out = module(b)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    no_grad = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # token-type rows that the batch does not use legitimately get no gradient
    no_grad = [n for n in no_grad if "wtt" not in n]
    assert not no_grad, no_grad


def test_lm_head_is_tied_and_saved_once():
    m = MaskedLM(build_backbone(tiny("encoder")))
    keys = m.state_dict().keys()
    assert "backbone.wte.weight" in keys
    assert not any(k.startswith("heads.lm") and "wte" in k for k in keys)
    assert m.heads["lm"]._embedding[0].weight is m.backbone.wte.weight


def test_config_round_trip_and_errors():
    cfg = tiny("decoder")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="unknown model preset 'huge'"):
        preset("huge", "encoder", 100)
    with pytest.raises(UserError, match="unknown fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_encoder_decoder_decoder_is_causal_and_reads_the_encoder():
    model = build_backbone(tiny("encoder_decoder")).eval()
    src, _ = batch()
    tgt = src.flip(1)
    hidden = model(src, decoder_input_ids=tgt)
    changed = tgt.clone()
    changed[:, 6:] = 8
    torch.testing.assert_close(model(src, decoder_input_ids=changed)[:, :6], hidden[:, :6])
    other_src = src.clone()
    other_src[:, -1] = 9
    assert not torch.allclose(model(other_src, decoder_input_ids=tgt)[:, 0], hidden[:, 0]), "cross-attention"
    assert model.config.n_dec_layer == model.config.n_layer == 2 and len(model.h_dec) == 2
