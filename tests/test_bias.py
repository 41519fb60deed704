"""Bias probe: the over-representation ranking, log-ratios and pseudo-log-likelihoods against direct
computations, the CLI's report files for causal and masked LMs, and bad input."""

import json
from collections import Counter

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.evaluation.bias import (BiasConfig, over_represented, probe_occupations, pseudo_log_likelihood,
                                         read_sentence_pairs)
from transferlab.transfer.pretrained import load_model


@pytest.fixture(scope="module")
def clm_dir(tmp_path_factory, corpus_dir):
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    return pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path_factory.mktemp("b") / "clm"),
                                   objective="clm", model="tiny", seq_len=32, batch_size=8, steps=3, progress=False,
                                   eval_batches=1))


def test_over_represented_ranks_by_smoothed_log_odds():
    a = Counter({"happy": 9, "strong": 4, "kind": 3, "once": 1})
    b = Counter({"happy": 1, "kind": 3, "pretty": 6, "sad": 2})
    top_a, top_b = over_represented(a, b, top=5)
    assert [r["word"] for r in top_a] == ["happy", "strong"]
    assert [r["word"] for r in top_b] == ["pretty", "sad", "kind"]  # kind: equal counts, but b has fewer words
    assert top_a[0]["count_a"] == 9 and top_a[0]["count_b"] == 1
    assert all(r["word"] != "once" for r in top_a + top_b)  # seen once in total: noise, left out


@torch.no_grad()
def test_occupation_log_ratio_is_the_log_probability_difference(clm_dir):
    module, tok, _ = load_model(clm_dir)
    module.eval()
    cfg = BiasConfig(templates=[("The {occupation} was a", "man", "woman")], occupations=["nurse"])
    got = probe_occupations(module, tok, cfg)["rows"][0]["log_ratio"]

    def logp(context, word):
        ctx = [tok.eos_id] + tok.encode(context)
        cont = tok.encode(context + " " + word)[len(ctx) - 1:]
        total = 0.0
        for t, token in enumerate(cont):
            logits = module.heads["lm"](module.backbone(torch.tensor([ctx + cont[:t]])))[0, -1]
            total += float(logits.log_softmax(-1)[token])
        return total
    assert got == pytest.approx(logp("The nurse was a", "man") - logp("The nurse was a", "woman"), abs=1e-3)


@torch.no_grad()
def test_pseudo_log_likelihood_masks_one_token_at_a_time(pretrained_dir):
    module, tok, _ = load_model(pretrained_dir)
    module.eval()
    sentence = "the cat sat on the mat ."
    ids = [tok.cls_id] + tok.encode(sentence) + [tok.eos_id]
    expected = 0.0
    for i in range(1, len(ids) - 1):
        x = torch.tensor([ids[:i] + [tok.mask_id] + ids[i + 1:]])
        expected += float(module.heads["lm"](module.backbone(x))[0, i].log_softmax(-1)[ids[i]])
    assert pseudo_log_likelihood(module, tok, sentence, batch_size=3) == pytest.approx(expected, abs=1e-3)


def test_cli_probe_bias_causal(clm_dir, tmp_path, capsys):
    out = tmp_path / "bias"
    assert main(["probe", "bias", "--model", str(clm_dir), "--samples", "6", "--max-new-tokens", "3",
                 "--occupations", "nurse,engineer", "--pair", "the cat|the dog", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert '"the cat" vs "the dog"' in report and "fine-tuned from this checkpoint" in report
    result = json.loads((out / "bias.json").read_text())
    assert len(result["pairs"]) == 4 and result["pairs"][-1]["samples"] == 6
    occ = result["occupations"]
    assert set(occ["by_occupation"]) == {"nurse", "engineer"} and len(occ["rows"]) == 4
    assert occ["mean_log_ratio"] == pytest.approx(sum(r["log_ratio"] for r in occ["rows"]) / 4)
    assert 0 <= result["sentences"]["prefers_stereotype"] <= 1 and result["sentences"]["method"] == "log-likelihood"
    assert (out / "bias.png").read_bytes()[:4] == b"\x89PNG" and (out / "bias.md").is_file()


def test_cli_probe_bias_masked_lm_runs_only_the_sentence_pairs(pretrained_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the cat sat .\tthe dog sat .\nhe ran .\tshe ran .\n", encoding="utf-8")
    assert main(["probe", "bias", "--model", str(pretrained_dir), "--sentence-pairs", str(pairs)]) == 0
    report = capsys.readouterr().out
    assert "pseudo-log-likelihood" in report and "need a causal LM" in report and "of 2 pairs" in report


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="separated by '|'"):
        BiasConfig(user_pairs=["He was very"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one sentence\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.tsv:1: expected two tab-separated"):
        read_sentence_pairs(bad)
    assert len(read_sentence_pairs(None)) >= 12
