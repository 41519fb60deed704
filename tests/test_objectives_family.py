"""The objective family beyond MLM/CLM: permutation LM (XLNet), MPNet, ELECTRA.

Corruption rates on a fixed seed, mask invariants against a brute-force construction, the two-stream attention
checked functionally (changing a token a query must not see leaves it unchanged), ELECTRA's labels, a tiny
pretraining run per objective, gradients everywhere, transfer, and the refusals.
"""

import json

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.models import build_backbone, preset
from transferlab.objectives import OBJECTIVES, BidirectionalLM, Electra, MPNet, PermutationLM, SkipGram
from transferlab.objectives.electra import ElectraCorruption, replace_tokens, sample_tokens
from transferlab.objectives.mlm import IGNORE, N_SPECIAL
from transferlab.objectives.mpnet import MPNetCorruption
from transferlab.objectives.plm import MAX_SPAN, PLMCorruption, span_targets
from transferlab.objectives.word2vec import SkipGramCorruption
from transferlab.transfer import from_pretrained

V, CLS, MASK = 60, 2, 4
NEW = ("plm", "mpnet", "electra", "word2vec", "elmo")


def corruption(name):
    class Tok:
        vocab_size, cls_id, mask_id = V, CLS, MASK

    return OBJECTIVES[name][2](Tok)


def module(name, seed=0, position="learned"):
    family, cls, _ = OBJECTIVES[name]
    torch.manual_seed(seed)
    return cls(build_backbone(preset("tiny", family, V, max_len=64, dropout=0.0, position=position)))


def blocks(B=8, T=35, seed=0):
    return torch.randint(N_SPECIAL, V, (B, T), generator=torch.Generator().manual_seed(seed))


def runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for v in row.tolist() + [False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


# ---- permutation LM -----------------------------------------------------------------------------------------

def test_plm_predicts_a_sixth_in_spans_of_one_to_five():
    g = torch.Generator().manual_seed(0)
    ordinary = torch.ones(400, 18 * 7, dtype=torch.bool)
    ordinary[:, ::25] = False  # separators: never predicted
    targets = span_targets(ordinary, 1 / 6, g)
    assert not targets[~ordinary].any()
    lengths = torch.tensor([n for row in span_targets(torch.ones(400, 126, dtype=torch.bool), 1 / 6, g)
                            for n in runs(row)])
    assert abs(lengths.float().mean() / 18 - 1 / 6) < 0.004  # one span of mean length 3 per 18 tokens
    assert lengths.max() == MAX_SPAN, "spans never touch, so no run is longer than a span"
    share = torch.bincount(lengths, minlength=6)[1:].float() / len(lengths)
    assert torch.allclose(share, torch.full((5,), 0.2), atol=0.02), share


def brute_force_masks(ids_row, positions_row, valid_row):
    """XLNet's masks from the definition: context tokens first (mutually visible), then the predicted tokens in
    the order of the slots; content sees itself, the query never does."""
    T = len(ids_row)
    order = [int(p) for p, v in zip(positions_row, valid_row) if v]
    slot = {p: s for s, p in enumerate(order)}
    content = [[(j not in slot) or (i in slot and slot[j] <= slot[i]) for j in range(T)] for i in range(T)]
    query = [[(j not in slot) or slot[j] < s for j in range(T)] for s in range(len(order))]
    return torch.tensor(content), torch.tensor(query, dtype=torch.bool).reshape(len(order), T)


def test_plm_masks_match_brute_force_and_never_show_a_query_its_token():
    c = PLMCorruption(CLS)
    batch = c(blocks(6, 40), torch.Generator().manual_seed(3))
    ids, pos, labels = batch["input_ids"], batch["target_positions"], batch["labels"]
    valid = labels != IGNORE
    for b in range(ids.shape[0]):
        content, query = brute_force_masks(ids[b], pos[b], valid[b])
        n = int(valid[b].sum())
        assert torch.equal(batch["content_mask"][b, 0], content)
        assert torch.equal(batch["query_mask"][b, 0, :n], query)
        assert not batch["query_mask"][b, 0, torch.arange(n), pos[b, :n]].any(), "a query saw its own token"
        assert torch.equal(labels[b, :n], ids[b, pos[b, :n]])
        assert sorted(batch["perm_rank"][b][batch["perm_rank"][b] >= 0].tolist()) == list(range(n))
    # the factorisation order is random: the first predicted slot is not always the leftmost target
    first_is_leftmost = [int(pos[b, 0]) == int(pos[b, valid[b]].min()) for b in range(ids.shape[0])]
    assert not all(first_is_leftmost)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_two_stream_query_sees_earlier_tokens_but_not_its_own(position):
    m = module("plm", position=position).eval()
    batch = PLMCorruption(CLS)(blocks(1, 40), torch.Generator().manual_seed(1))
    n = int((batch["labels"] != IGNORE).sum())
    assert n >= 3
    pos = batch["target_positions"][0]

    def query_out(ids):
        q = m.heads["query"].weight.expand(1, pos.numel(), -1)
        return m.backbone.two_stream(ids, batch["content_mask"], q, batch["target_positions"], batch["query_mask"])

    base = query_out(batch["input_ids"])
    s = 1  # the second slot: it sees the first predicted token and the context, not itself or later ones
    for changed_pos, should_change in ((pos[s], False), (pos[s + 1], False), (pos[0], True)):
        ids = batch["input_ids"].clone()
        ids[0, changed_pos] = N_SPECIAL + (int(ids[0, changed_pos]) - N_SPECIAL + 1) % (V - N_SPECIAL)
        moved = not torch.allclose(query_out(ids)[0, s], base[0, s], atol=1e-6)
        assert moved == should_change, (int(changed_pos), should_change)


# ---- MPNet ------------------------------------------------------------------------------------------------------

def test_mpnet_rate_and_80_10_10_on_the_query_stream():
    batch = MPNetCorruption(V, MASK, CLS)(blocks(256, 127), torch.Generator().manual_seed(0))
    valid = batch["labels"] != IGNORE
    assert abs(valid.sum() / (256 * 127) - 0.15) < 0.005
    q, y = batch["query_ids"][valid], batch["labels"][valid]
    assert abs((q == MASK).float().mean() - 0.8) < 0.01
    assert abs(((q != MASK) & (q != y)).float().mean() - 0.1) < 0.01
    assert (batch["input_ids"][:, 0] == CLS).all() and not (batch["input_ids"] == MASK).any(), \
        "the content stream holds the clean tokens"


def test_mpnet_position_compensation():
    batch = MPNetCorruption(V, MASK, CLS, mask_prob=0.3)(blocks(4, 30), torch.Generator().manual_seed(2))
    T = batch["input_ids"].shape[1]
    pos, valid = batch["target_positions"], batch["labels"] != IGNORE
    mask = batch["query_mask"][:, 0]
    for b in range(4):
        n = int(valid[b].sum())
        content, query = brute_force_masks(batch["input_ids"][b], pos[b], valid[b])
        assert torch.equal(batch["content_mask"][b, 0], content)
        assert torch.equal(mask[b, :n, :T], query), "the content part is XLNet's query mask"
        for s in range(n):
            seen_masks = mask[b, s, T:].nonzero().squeeze(-1)
            assert seen_masks.tolist() == list(range(s, n)), "its own [MASK] and those of later predictions"
            positions = set(mask[b, s, :T].nonzero().squeeze(-1).tolist()) | set(pos[b, seen_masks].tolist())
            assert positions == set(range(T)), "every position of the sentence is visible"
            assert not mask[b, s, int(pos[b, s])], "but never its own token"


# ---- ELECTRA ------------------------------------------------------------------------------------------------------

def test_electra_samples_follow_the_generator_and_labels_mark_exactly_the_replacements():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, V, generator=g) * 2
    draws = sample_tokens(logits.expand(40000, V), torch.rand(40000, generator=g))
    assert (draws >= N_SPECIAL).all(), "special tokens are never sampled"
    p = torch.softmax(logits[0, N_SPECIAL:], -1)
    freq = torch.bincount(draws, minlength=V)[N_SPECIAL:].float() / 40000
    assert (freq - p).abs().max() < 0.01

    original = blocks(4, 20)
    selected = torch.rand(original.shape, generator=g) < 0.3
    sampled = original[selected].clone()
    sampled[::2] = N_SPECIAL + (sampled[::2] - N_SPECIAL + 1) % (V - N_SPECIAL)  # half differ, half equal
    inputs, replaced = replace_tokens(original, selected, sampled)
    assert torch.equal(replaced, inputs != original)
    assert int(replaced.sum()) == len(sampled[::2]) and not replaced[~selected].any()


def test_electra_masks_15_percent_with_80_10_10():
    batch = corruption("electra")(blocks(256, 127), torch.Generator().manual_seed(0))
    selected = batch["labels"] != IGNORE
    assert abs(selected.float().mean() - 0.15) < 0.005 and not selected[:, 0].any()  # [CLS] is never masked
    x, y = batch["input_ids"][selected], batch["original_ids"][selected]
    assert abs((x == MASK).float().mean() - 0.8) < 0.01 and abs((x == y).float().mean() - 0.1) < 0.01
    assert torch.equal(batch["input_ids"][~selected], batch["original_ids"][~selected])


@pytest.mark.parametrize("name", NEW)
def test_corruptions_are_pure_functions_of_the_seed(name):
    c = corruption(name)
    a, b = (c(blocks(4, 40), torch.Generator().manual_seed(7)) for _ in range(2))
    d = c(blocks(4, 40), torch.Generator().manual_seed(8))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert name == "elmo" or any(not torch.equal(a[k], d[k]) for k in a)  # elmo reads the clean block


def test_electra_forward_marks_replaced_positions_only_among_masked():
    m = module("electra")
    batch = corruption("electra")(blocks(), torch.Generator().manual_seed(0))
    out = m(batch)
    selected = batch["labels"] != IGNORE
    assert abs(selected.float().mean() - 0.15) < 0.05
    assert not out["replaced"][~selected].any() and out["replaced"][selected].any()
    assert out["n_predictions"] == batch["input_ids"].numel()  # the discriminator learns from every position


def test_electra_generator_is_a_dropped_head():
    m = module("electra")
    keys = m.state_dict().keys()
    assert {k.split(".")[1] for k in keys if k.startswith("heads.")} == {"generator", "discriminator"}
    assert m.heads["generator"].encoder.config.d_model == m.backbone.config.d_model // 4


# ---- every objective ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["learned", "rotary"])
@pytest.mark.parametrize("name", NEW)
def test_tiny_pretraining_lowers_the_loss(name, position):
    m, c = module(name, position=position), corruption(name)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2 if name in ("word2vec", "elmo") else 3e-3)
    # learnable text: each row counts up in steps of 3 from a random start, so neighbours predict each other
    start = torch.randint(0, V - N_SPECIAL, (8, 1), generator=torch.Generator().manual_seed(0))
    data = (start + 3 * torch.arange(35)) % (V - N_SPECIAL) + N_SPECIAL
    losses = []
    for step in range(40):  # rotary attention starts slower: its first ~20 steps are nearly flat on this data
        loss = m(c(data, torch.Generator().manual_seed(step)))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("position", ["learned", "rotary"])
@pytest.mark.parametrize("name", NEW)
def test_every_parameter_gets_a_gradient(name, position):
    m = module(name, position=position)
    out = m(corruption(name)(blocks(), torch.Generator().manual_seed(0)))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in m.named_parameters() if (p.grad is None or not torch.isfinite(p.grad).all())
               and "wtt" not in n]  # unused token-type rows
    assert not missing, missing


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match=r"must be in \(0, 0.5\]"):
        PLMCorruption(CLS, 0.6)
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(UserError, match=r"--mask-prob must be in \(0, 1\)"):
            MPNetCorruption(V, MASK, CLS, rate)
        with pytest.raises(UserError, match=r"--mask-prob must be in \(0, 1\)"):
            ElectraCorruption(V, MASK, CLS, rate)
    with pytest.raises(UserError, match="--seq-len must be at least 19"):
        PLMCorruption(CLS).block_len(16)
    decoder = build_backbone(preset("tiny", "decoder", V, max_len=64))
    for cls in (PermutationLM, MPNet, Electra):
        with pytest.raises(UserError, match="needs a backbone of family encoder, got family 'decoder'"):
            cls(decoder)
    encoder = build_backbone(preset("tiny", "encoder", V, max_len=64))
    with pytest.raises(UserError, match="family embedding, got family 'encoder'"):
        SkipGram(encoder)
    with pytest.raises(UserError, match="family rnn, got family 'encoder'"):
        BidirectionalLM(encoder)
    with pytest.raises(UserError, match="does not apply to --objective word2vec"):
        OBJECTIVES["word2vec"][2](None, mask_prob=0.2)


@pytest.fixture(scope="module")
def electra_run(tmp_path_factory, corpus_dir):
    out = tmp_path_factory.mktemp("electra") / "run"
    assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", "electra", "--steps", "3", "--seq-len", "32",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    return out


def test_electra_transfers_the_discriminator(electra_run):
    from transferlab.training.checkpoint import load_weights

    saved = load_weights(electra_run / "final")
    model = from_pretrained(electra_run / "final", num_labels=2, verbose=False)
    assert model.report.dropped == sorted(k for k in saved if k.startswith("heads."))
    assert any(k.startswith("heads.generator.encoder.") for k in model.report.dropped)
    state = model.module.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in model.report.loaded)


@pytest.mark.parametrize("name", ["plm", "mpnet"])
def test_pretrain_cli_reaches_every_objective(name, corpus_dir, tmp_path):
    out = tmp_path / name
    assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", name, "--steps", "2", "--seq-len", "32",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["task"]["kind"] == name and config["backbone"]["family"] == "encoder"
    model = from_pretrained(out / "final", num_labels=3, verbose=False)
    assert all(k.startswith("heads.") for k in model.report.dropped) and model.report.loaded


@pytest.mark.parametrize("name", ["electra", "word2vec"])
def test_held_out_metrics_say_what_the_objective_measures(name, corpus_dir, tmp_path):
    """ELECTRA's loss mixes a cross-entropy with 50 x a binary one: its perplexity is the generator's, and the
    discriminator's accuracy is logged; word2vec's negative-sampling loss has no perplexity at all."""
    import math

    out = tmp_path / name
    assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", name, "--steps", "2", "--seq-len", "32",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held_out = [r for r in rows if r["split"] == "eval"][-1]
    if name == "electra":
        assert 0 <= held_out["discriminator_accuracy"] <= 1
        assert held_out["ppl"] == pytest.approx(math.exp(held_out["generator_loss"]))
    else:
        assert "ppl" not in held_out and held_out["loss"] > 0


def test_pretrain_cli_refuses_bad_settings_without_leaving_a_run(corpus_dir, tmp_path, capsys):
    assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", "plm", "--seq-len", "12",
                 "--out", str(tmp_path / "short"), "--quiet"]) == 2
    assert "--seq-len must be at least 19" in capsys.readouterr().err
    assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", "mpnet", "--mask-prob", "1.5",
                 "--out", str(tmp_path / "rate"), "--quiet"]) == 2
    assert "--mask-prob must be in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "short").exists() and not (tmp_path / "rate").exists()


# ---- word2vec and ELMo ------------------------------------------------------------------------------------------

def test_skipgram_pairs_match_brute_force_and_the_dynamic_window():
    c = SkipGramCorruption(V, window=3, negatives=4)
    ids = blocks(2000, 12)
    ids[:, 0] = 3  # a separator: never a centre, never a context
    batch = c(ids, torch.Generator().manual_seed(0))
    ctx, valid = batch["contexts"], batch["context_valid"]
    offsets = [-3, -2, -1, 1, 2, 3]
    for b in range(3):
        for t in range(12):
            for k, d in enumerate(offsets):
                if valid[b, t, k]:
                    assert 0 <= t + d < 12 and ctx[b, t, k] == ids[b, t + d] and t != 0 and t + d != 0
    assert not valid[:, 0].any() and not valid[:, 1, 1].any()  # nor is it the context of position 1
    # distance d is kept when the centre's radius (uniform in 1..3) reaches it: P = (3 - d + 1) / 3
    inner = valid[:, 4:9]  # centres whose whole window lies inside and avoids the separator
    for k, d in enumerate(offsets):
        assert abs(inner[:, :, k].float().mean() - (3 - abs(d) + 1) / 3) < 0.02, d


def test_skipgram_negatives_follow_the_unigram_to_the_three_quarters():
    ids = torch.full((50, 40), 10)
    ids[:, :8] = 11  # 10 is four times as frequent as 11 (32 vs 8 per row)
    negatives = SkipGramCorruption(V, negatives=20)(ids, torch.Generator().manual_seed(0))["negatives"]
    share_11 = (negatives == 11).float().mean()
    assert set(negatives.unique().tolist()) == {10, 11}
    assert abs(share_11 - 8 ** 0.75 / (8 ** 0.75 + 32 ** 0.75)) < 0.01


def test_bilstm_directions_read_only_their_side_and_ignore_padding():
    m = build_backbone(preset("tiny", "rnn", V, dropout=0.0)).eval()
    ids = blocks(2, 10)
    f, b = m.directions(ids)
    changed = ids.clone()
    changed[:, 6] = N_SPECIAL + (changed[:, 6] - N_SPECIAL + 1) % (V - N_SPECIAL)
    f2, b2 = m.directions(changed)
    torch.testing.assert_close(f2[:, :6], f[:, :6])
    torch.testing.assert_close(b2[:, 7:], b[:, 7:])
    assert not torch.allclose(f2[:, 6:], f[:, 6:]) and not torch.allclose(b2[:, :7], b[:, :7])
    attention = torch.ones_like(ids)
    attention[0, 7:] = 0
    padded = ids.clone()
    padded[0, 7:] = 0
    hidden = m(ids[:1, :7])
    torch.testing.assert_close(m(padded, attention=attention)[:1, :7], hidden)


@pytest.fixture(scope="module")
def probe_models(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("probe")
    for name in ("word2vec", "elmo"):
        assert main(["pretrain", "--corpus", str(corpus_dir), "--objective", name, "--steps", "3", "--seq-len", "32",
                     "--batch-size", "4", "--out", str(d / name), "--quiet"]) == 0
    return d


CONTEXTS = ["the red dog ran under the tree .", "it was very red and then it was blue ."]


def test_sense_probe_one_vector_from_word2vec_two_from_contextual_models(probe_models, pretrained_dir, capsys):
    from transferlab.evaluation.probes import sense_probe

    w2v = sense_probe(probe_models / "word2vec" / "final", "red", CONTEXTS)
    torch.testing.assert_close(w2v.similarity, torch.ones(2, 2))
    for contextual in (probe_models / "elmo" / "final", pretrained_dir):
        probe = sense_probe(contextual, "red", CONTEXTS)
        # a few steps of training: the contexts move the vectors a little, word2vec's stay identical (1 - 1e-6)
        assert float(probe.similarity[0, 1]) < 1 - 1e-4, contextual
    assert main(["probe", "senses", "--model", str(probe_models / "word2vec" / "final"), "--word", "red",
                 "--contexts", *CONTEXTS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["similarity"][0][1] == pytest.approx(1.0, abs=1e-5)
    assert main(["probe", "senses", "--model", str(pretrained_dir), "--word", "purple", "--contexts",
                 *CONTEXTS]) == 2
    assert "does not occur in the context" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["word2vec", "elmo"])
def test_word_vectors_and_bilstm_transfer_to_a_classifier(name, probe_models, labeled_files):
    from transferlab.training.checkpoint import load_weights

    final = probe_models / name / "final"
    saved = load_weights(final)
    model = from_pretrained(final, num_labels=2, label_names=["neg", "pos"], verbose=False)
    assert model.report.dropped == sorted(k for k in saved if k.startswith("heads."))
    assert model.module.heads["classifier"].pooling == "mean"
    assert torch.equal(model.module.state_dict()["backbone.wte.weight"], saved["backbone.wte.weight"])
    model.compile(lr=1e-2, metrics=["accuracy"], warmup=0.0)
    history = model.fit(str(labeled_files[0]), validation_data=str(labeled_files[1]), epochs=1, batch_size=32,
                        verbose=False)
    assert 0.0 <= history.history["val_accuracy"][-1] <= 1.0
