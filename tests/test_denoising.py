"""BART's five noise functions and MASS: rates on a fixed seed, invariants, tiny pretraining runs, refusals."""

import json
import math

import pytest
import torch

from transferlab.errors import UserError
from transferlab.objectives import BartCorruption, MassCorruption, sentence_end_ids
from transferlab.objectives.denoising import (N_SPECIAL, document_rotation, sentence_permutation, text_infilling,
                                              token_deletion, token_masking)
from transferlab.recipes.pretrain import PretrainConfig, pretrain

MASK, BOS, EOS, END = 4, 5, 6, 50  # END: the test vocabulary's sentence-end token
VOCAB = 200


def random_blocks(B=128, T=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL + 1, VOCAB, (B, T), generator=g)
    ids[ids == END] = END + 1
    ids[:, 17] = EOS  # a document boundary inside every block
    return ids, torch.full((B,), T)


def is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_token_masking_rate_and_specials():
    ids, lengths = random_blocks()
    out, new_lengths = token_masking(ids, lengths, 0.2, MASK, torch.Generator().manual_seed(1))
    ordinary = ids >= N_SPECIAL
    masked = out == MASK
    assert abs(masked.sum() / ordinary.sum() - 0.2) < 0.01
    assert torch.equal(out[~masked], ids[~masked]) and (out[:, 17] == EOS).all()
    assert torch.equal(new_lengths, lengths)


def test_token_deletion_shortens_by_the_deleted_count():
    ids, lengths = random_blocks()
    out, new_lengths = token_deletion(ids, lengths, 0.3, torch.Generator().manual_seed(2))
    deleted = lengths - new_lengths
    assert abs(deleted.sum() / (ids >= N_SPECIAL).sum() - 0.3) < 0.01
    for b in range(len(ids)):
        row = out[b, :new_lengths[b]].tolist()
        assert len(row) == 64 - int(deleted[b]) and (out[b, new_lengths[b]:] == 0).all()
        assert is_subsequence(row, ids[b].tolist()), "what is left keeps its order"
        assert row.count(EOS) == 1, "special tokens are never deleted"


def test_text_infilling_one_mask_per_span_and_rate():
    ids, lengths = random_blocks()
    out, new_lengths, n_spans = text_infilling(ids, lengths, 0.3, MASK, torch.Generator().manual_seed(3))
    masks = (out == MASK).sum(1)
    assert torch.equal(masks, n_spans), "each span becomes exactly one [MASK]"
    removed = lengths - new_lengths + n_spans  # tokens covered by spans
    ordinary = (ids >= N_SPECIAL).sum(1)
    assert abs(removed.sum() / ordinary.sum() - 0.3) < 0.01
    # mean span length near Poisson(3)'s mean (the last span of each row is cut to fit, so a little less)
    assert 2.3 < removed.sum() / n_spans.sum() < 3.3
    for b in range(len(ids)):
        row = out[b, :new_lengths[b]].tolist()
        assert is_subsequence([t for t in row if t != MASK], ids[b].tolist()) and row.count(EOS) == 1


def test_zero_length_spans_insert_a_mask():
    ids, lengths = random_blocks(B=16)
    # Poisson(0.05) spans are almost all empty: each one inserts a [MASK] without removing anything.
    out, new_lengths, n_spans = text_infilling(ids, lengths, 0.1, MASK, torch.Generator().manual_seed(4),
                                               poisson_lambda=0.05)
    assert (new_lengths > lengths).all()
    assert torch.equal((out == MASK).sum(1), n_spans)
    removed = lengths - new_lengths + n_spans
    assert (removed <= 7).all() and (removed >= 6).all()  # 10% of 63 ordinary tokens, rounded at random


def documents(n_rows=64, seed=0):
    """Rows of documents made of distinct sentences (each ends with END), documents separated by EOS."""
    g = torch.Generator().manual_seed(seed)
    rows, word = [], N_SPECIAL + 1
    for _ in range(n_rows):
        row = []
        for _doc in range(2):
            for _s in range(int(torch.randint(2, 6, (1,), generator=g))):
                for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                    row.append(word % 40 + 60)
                    word += 1
                row.append(END)
            row.append(EOS)
        rows.append(torch.tensor(row))
    T = max(len(r) for r in rows)
    ids = torch.zeros(n_rows, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, torch.tensor([len(r) for r in rows])


def split_docs(row):
    docs, doc, sent = [], [], []
    for t in row:
        if t == EOS:
            docs.append(doc)
            doc = []
            continue
        sent.append(t)
        if t == END:
            doc.append(tuple(sent))
            sent = []
    return docs


def test_sentence_permutation_keeps_sentences_intact():
    ids, lengths = documents()
    ends = torch.tensor([END])
    out, new_lengths = sentence_permutation(ids, lengths, 1.0, ends, EOS, torch.Generator().manual_seed(5))
    assert torch.equal(new_lengths, lengths) and torch.equal(out == EOS, ids == EOS), "documents stay in place"
    moved = total = 0
    expected_moved = 0.0
    for b in range(len(ids)):
        before, after = split_docs(ids[b, :lengths[b]].tolist()), split_docs(out[b, :lengths[b]].tolist())
        for d0, d1 in zip(before, after):
            assert sorted(d0) == sorted(d1), "the same sentences, each intact"
            moved += sum(x != y for x, y in zip(d0, d1))
            total += len(d0)
            expected_moved += len(d0) - 1  # a uniform shuffle of n leaves 1 in place on average
    assert abs(moved - expected_moved) / total < 0.06


def test_sentence_permutation_rate_bounds_the_moved_sentences():
    ids, lengths = documents(seed=1)
    out, _ = sentence_permutation(ids, lengths, 0.3, torch.tensor([END]), EOS, torch.Generator().manual_seed(6))
    for b in range(len(ids)):
        for d0, d1 in zip(split_docs(ids[b, :lengths[b]].tolist()), split_docs(out[b, :lengths[b]].tolist())):
            assert sum(x != y for x, y in zip(d0, d1)) <= math.ceil(0.3 * len(d0))


def test_document_rotation_rate_and_multiset():
    ids, lengths = random_blocks(B=256)
    out, _ = document_rotation(ids, lengths, 0.4, EOS, torch.Generator().manual_seed(7))
    assert torch.equal(out.sort(1).values, ids.sort(1).values), "rotation keeps the multiset of tokens"
    assert (out[:, 17] == EOS).all()
    rotated = 0
    for b in range(len(ids)):
        for s, e in ((0, 17), (18, 64)):
            before, after = ids[b, s:e], out[b, s:e]
            if not torch.equal(before, after):
                rotated += 1
                shifts = [k for k in range(1, e - s) if torch.equal(torch.roll(before, -k), after)]
                assert len(shifts) == 1, "a rotated document is a cyclic shift of the original"
    assert abs(rotated / 512 - 0.4) < 0.05


def bart(**rates):
    return BartCorruption(MASK, BOS, EOS, (END,), max_len=64, **rates)


def test_bart_corruption_batch_is_seeded_and_reconstructs_the_clean_block():
    ids, _ = random_blocks(B=8)
    c = bart(mask=0.1, delete=0.1, infill=0.3, permute=1.0, rotate=0.5)
    a, b = c(ids, torch.Generator().manual_seed(0)), c(ids, torch.Generator().manual_seed(0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["labels"], ids)
    assert (a["decoder_input_ids"][:, 0] == BOS).all() and torch.equal(a["decoder_input_ids"][:, 1:], ids[:, :-1])
    assert a["input_ids"].shape[1] <= 64 and not torch.equal(a["input_ids"][:, :10], ids[:, :10])
    pad = a["attention"] == 0
    assert (a["input_ids"][pad] == 0).all()


@pytest.mark.parametrize("rates,needle", [
    (dict(mask=1.0), "mask rate must be in (0, 1)"),
    (dict(infill=-0.1), "infill rate must be in (0, 1)"),
    (dict(delete=1.5), "delete rate"),
    (dict(permute=1.5), "permute rate must be in (0, 1]"),
    (dict(infill=0.0, permute=0.0), "every noise function off"),
    (dict(poisson_lambda=0.0), "mean span length"),
])
def test_bad_bart_rates_refused(rates, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        bart(**rates)


def test_mass_span_length_and_position():
    ids, _ = random_blocks(B=512, T=40)
    out = MassCorruption(MASK, BOS, span=0.5)(ids, torch.Generator().manual_seed(8))
    pos = out["decoder_positions"]
    assert pos.shape == (512, 20) and (pos.diff(dim=1) == 1).all(), "one contiguous span of half the block"
    starts = pos[:, 0].float()
    assert starts.min() >= 0 and pos[:, -1].max() <= 39
    assert abs(starts.mean() - 10) < 0.6 and starts.min() == 0 and starts.max() == 20, "start uniform over 0..20"
    assert torch.equal(out["labels"], ids.gather(1, pos))
    masked = out["input_ids"] == MASK
    assert (masked.sum(1) == 20).all() and torch.equal(masked.nonzero()[:, 1].view(512, 20), pos)
    assert torch.equal(out["input_ids"][~masked], ids[~masked])
    assert (out["decoder_input_ids"][:, 0] == BOS).all()
    assert torch.equal(out["decoder_input_ids"][:, 1:], out["labels"][:, :-1])
    with pytest.raises(UserError, match="span"):
        MassCorruption(MASK, BOS, span=1.0)


def test_sentence_end_ids_from_the_tokenizer(tokenizer):
    ends = sentence_end_ids(tokenizer)
    assert tokenizer.token_to_id(".") in ends
    assert all(tokenizer.token_to_id(w) not in ends for w in ("the", "cat", "##s") if tokenizer.token_to_id(w))


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


@pytest.mark.parametrize("objective,noise", [("bart", {"infill": 0.3, "permute": 1.0, "rotate": 0.2,
                                                       "mask": 0.05, "delete": 0.05}),
                                             ("mass", {"span": 0.5})])
def test_tiny_pretraining_lowers_the_loss(objective, noise, corpus_dir, tmp_path):
    final = pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / objective), objective=objective,
                                    model="tiny", seq_len=32, batch_size=8, steps=40, lr=3e-3, warmup=0.1,
                                    log_every=5, progress=False, eval_batches=2, noise=noise, decoder_layers=1))
    config = json.loads((final / "config.json").read_text())
    assert config["task"]["kind"] == objective and config["backbone"]["family"] == "encoder_decoder"
    assert config["backbone"]["n_dec_layer"] == 1
    curve = losses(tmp_path / objective)
    assert curve[-1] < 0.8 * curve[0], curve


@pytest.mark.parametrize("settings,needle", [
    (dict(objective="bart", family="encoder"), "trains a 'encoder_decoder' backbone, but --family encoder"),
    (dict(objective="mlm", noise={"infill": 0.3}), "--noise sets the corruption of bart and mass"),
    (dict(objective="bart", noise={"span": 0.5}), "bart has no setting span"),
    (dict(objective="mass", noise={"span": 0.0}), "must be in (0, 1)"),
    (dict(objective="mlm", decoder_layers=2), "--decoder-layers 2"),
])
def test_bad_pretraining_settings_refused(settings, needle, corpus_dir, tmp_path):
    with pytest.raises(UserError) as e:
        pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "x"), steps=1, progress=False,
                                **settings))
    assert needle in str(e.value)
    assert not (tmp_path / "x" / "final").exists()


def test_padded_rows_keep_their_padding():
    ids, _ = documents(n_rows=8, seed=2)
    lengths = (ids != 0).sum(1)
    g = torch.Generator().manual_seed(9)
    pad = ~(torch.arange(ids.shape[1]) < lengths[:, None])
    for out, new_lengths in (sentence_permutation(ids, lengths, 1.0, torch.tensor([END]), EOS, g),
                             document_rotation(ids, lengths, 1.0, EOS, g)):
        assert torch.equal(new_lengths, lengths) and (out[pad] == 0).all()
        assert torch.equal(out.sort(1).values, ids.sort(1).values)
    out, new_lengths, n_spans = text_infilling(ids, lengths, 0.3, MASK, g)
    assert (out[~(torch.arange(out.shape[1]) < new_lengths[:, None])] == 0).all()
    assert torch.equal((out == MASK).sum(1), n_spans)
