"""Sliding-window perplexity: every token scored once with the stated context, equal to a brute-force sum."""

import json
import math

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.evaluation.perplexity import sliding_window_perplexity, windows
from transferlab.models import build_backbone, preset
from transferlab.objectives import CausalLM

from conftest import sentences


@pytest.mark.parametrize("n, window, stride", [(50, 16, 16), (50, 16, 5), (17, 16, 8), (3, 16, 1), (100, 7, 3)])
def test_windows_score_each_token_once_with_enough_context(n, window, stride):
    scored = []
    for i, (b, e, k) in enumerate(windows(n, window, stride)):
        assert e - b <= window and 1 <= k <= e - b - 1
        for t in range(e - k, e):
            scored.append(t)
            if i > 0:
                assert t - b >= max(1, window - stride)  # context of token t inside its window
    assert scored == list(range(1, n))


@torch.no_grad()
@pytest.mark.parametrize("stride", [1, 5, 12])
def test_perplexity_equals_brute_force(tokenizer, stride):
    torch.manual_seed(0)
    W = 12
    module = CausalLM(build_backbone(preset("tiny", "decoder", tokenizer.vocab_size, max_len=W,
                                            dropout=0.0))).eval()
    text = " ".join(sentences(4, seed=3))
    ids = [tokenizer.eos_id] + tokenizer.encode(text)
    expected = 0.0
    for b, e, k in windows(len(ids), W, stride):
        for t in range(e - k, e):  # brute force: one forward pass per scored token, on its window's prefix
            logits = module.heads["lm"](module.backbone(torch.tensor([ids[b:t]])))[0, -1]
            expected -= float(logits.log_softmax(-1)[ids[t]])
    assert len(ids) > 3 * W  # several windows
    got = sliding_window_perplexity(module, tokenizer, text, window=W, stride=stride, batch_size=3)
    assert got["nll"] == pytest.approx(expected, rel=1e-5)
    assert got["tokens"] == len(ids) - 1 and got["min_context"] == max(1, W - stride)
    assert got["ppl"] == pytest.approx(math.exp(expected / (len(ids) - 1)), rel=1e-5)
    assert got["word_ppl"] == pytest.approx(math.exp(expected / len(text.split())), rel=1e-5)


def test_cli_perplexity(tmp_path, corpus_dir, capsys):
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    final = pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "clm"), objective="clm",
                                    model="tiny", seq_len=32, batch_size=8, steps=3, progress=False,
                                    eval_batches=1))
    data = tmp_path / "heldout.txt"
    data.write_text("\n".join(sentences(20, seed=9)) + "\n", encoding="utf-8")
    assert main(["perplexity", "--model", str(final), "--data", str(data), "--stride", "16", "--window", "32",
                 "--json", str(tmp_path / "ppl.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "stride 16" in out and "window 32" in out
    result = json.loads((tmp_path / "ppl.json").read_text())
    assert result["stride"] == 16 and 1 < result["ppl"] < 200 and result["tokens"] > 100
    assert main(["perplexity", "--model", str(final), "--data", str(data), "--quiet"]) == 0
    assert "window 32, stride 16" in capsys.readouterr().out  # defaults: the pretraining length, half of it
    assert main(["perplexity", "--model", str(final), "--data", str(data), "--stride", "64", "--window", "32"]) == 2
    assert "--stride 64" in capsys.readouterr().err
    assert main(["perplexity", "--model", str(final), "--data", str(tmp_path / "missing.txt")]) == 2
