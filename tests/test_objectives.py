"""Objective statistics: masking rates, 80/10/10, specials untouched, causal label alignment."""

import torch

from transferlab.objectives import CLMCorruption, MLMCorruption, mask_tokens
from transferlab.objectives.mlm import IGNORE, N_SPECIAL


def test_mlm_rates_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    vocab, mask_id = 1000, 4
    ids = torch.randint(N_SPECIAL, vocab, (256, 128), generator=g)
    ids[:, ::16] = 3  # separators: special, never selected
    inputs, labels = mask_tokens(ids, vocab, mask_id, g, mask_prob=0.15)
    ordinary = ids >= N_SPECIAL
    selected = labels != IGNORE
    rate = selected.sum() / ordinary.sum()
    assert abs(rate - 0.15) < 0.005
    assert not selected[~ordinary].any(), "special tokens must never be selected"
    assert (inputs[~ordinary] == ids[~ordinary]).all(), "special tokens must never change"
    assert (labels[selected] == ids[selected]).all()
    became_mask = (inputs == mask_id) & selected
    changed = (inputs != ids) & selected & ~became_mask
    kept = (inputs == ids) & selected
    n = selected.sum().float()
    assert abs(became_mask.sum() / n - 0.8) < 0.01
    # random replacements can coincide with the original token (1/vocab), which counts as "kept"
    assert abs(changed.sum() / n - 0.1) < 0.01
    assert abs(kept.sum() / n - 0.1) < 0.01
    assert (inputs[changed] >= N_SPECIAL).all(), "random replacements are ordinary tokens only"
    assert not ((inputs == mask_id) & ~selected).any()


def test_mlm_corruption_is_seeded_and_prepends_cls():
    c = MLMCorruption(vocab_size=100, mask_id=4, cls_id=2)
    blocks = torch.randint(7, 100, (4, 15))
    a = c(blocks, torch.Generator().manual_seed(1))
    b = c(blocks, torch.Generator().manual_seed(1))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["input_ids"].shape == (4, 16) and (a["input_ids"][:, 0] == 2).all() and (a["labels"][:, 0] == IGNORE).all()


def test_mlm_always_has_a_target():
    g = torch.Generator().manual_seed(0)
    ids = torch.full((1, 3), 10)
    _, labels = mask_tokens(ids, 100, 4, g, mask_prob=1e-9)
    assert (labels != IGNORE).sum() == 1


def test_clm_shift_alignment_keeps_eos():
    from transferlab.models import build_backbone, preset
    from transferlab.objectives import CausalLM

    m = CausalLM(build_backbone(preset("tiny", "decoder", 50, max_len=32)))
    eos = 6
    ids = torch.tensor([[10, 11, eos, 12, 13, eos]])
    out = m(CLMCorruption()(ids))
    assert torch.equal(out["labels"], ids[:, 1:]), "targets are the inputs shifted by one"
    assert (out["labels"] == eos).sum() == 2, "EOS is a real target"
    assert out["n_predictions"] == 5
    attention = torch.tensor([[1, 1, 1, 1, 0, 0]])
    out = m({"input_ids": ids, "attention": attention})
    assert out["n_predictions"] == 3
