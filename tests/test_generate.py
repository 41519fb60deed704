"""Generation: the KV cache changes nothing but speed, batching changes nothing, sampling is seeded, stop strings
cut the text, and the mistakes a user can make are explained."""

import json

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.evaluation.generate import GenerationConfig, generate, load_causal_lm, next_token
from transferlab.models import build_backbone, preset

PROMPTS = ["the cat sat on", "a bird", "then it was very happy and the dog ran under the big red"]


@pytest.fixture(scope="module")
def clm_dir(tmp_path_factory, corpus_dir):
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("runs") / "clm"
    return pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(out), objective="clm", model="tiny", seq_len=32,
                                   batch_size=8, steps=30, lr=3e-3, progress=False, eval_batches=1,
                                   optimizer="adamw", schedule="linear"))  # deterministic across thread counts


@pytest.fixture(scope="module")
def lm(clm_dir):
    return load_causal_lm(clm_dir)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_incremental_decoder_equals_full_forward(position):
    torch.manual_seed(0)
    dec = build_backbone(preset("tiny", "decoder", 50, max_len=32, dropout=0.0, position=position)).eval()
    ids = torch.randint(7, 50, (2, 12))
    full = dec(ids)
    cache = dec.new_cache()
    parts = [dec(ids[:, :5], cache=cache)] + [dec(ids[:, t:t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.8, 5, 0.9)])
def test_cached_generation_equals_uncached(lm, temperature, top_k, top_p):
    module, tok = lm
    kw = dict(max_new_tokens=12, temperature=temperature, top_k=top_k, top_p=top_p, seed=3, stop_at_eos=False)
    cached = generate(module, tok, PROMPTS, GenerationConfig(**kw, use_cache=True))
    plain = generate(module, tok, PROMPTS, GenerationConfig(**kw, use_cache=False))
    assert [g.token_ids for g in cached] == [g.token_ids for g in plain]
    assert all(len(g.token_ids) == 12 for g in cached)


def test_batched_prompts_equal_one_at_a_time(lm):
    module, tok = lm
    cfg = GenerationConfig(max_new_tokens=10, stop_at_eos=False)
    batched = generate(module, tok, PROMPTS, cfg)
    alone = [generate(module, tok, p, cfg)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_sampling_is_seeded(lm):
    module, tok = lm
    def run(seed):
        cfg = GenerationConfig(max_new_tokens=15, temperature=1.5, seed=seed, stop_at_eos=False)
        return [g.token_ids for g in generate(module, tok, PROMPTS, cfg)]
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_top_k_one_and_tiny_top_p_are_greedy():
    torch.manual_seed(0)
    logits = torch.randn(64, 30)
    greedy = logits.argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(next_token(logits, GenerationConfig(temperature=1.0, top_k=1), g), greedy)
    assert torch.equal(next_token(logits, GenerationConfig(temperature=1.0, top_p=1e-6), g), greedy)


def test_top_p_keeps_only_the_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.7 keeps the first two tokens only
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    drawn = next_token(logits, GenerationConfig(temperature=1.0, top_p=0.7), g)
    assert set(drawn.tolist()) == {0, 1}
    assert abs((drawn == 0).float().mean().item() - 0.5 / 0.8) < 0.05


def test_stop_string_cuts_the_text(lm):
    module, tok = lm
    kw = dict(max_new_tokens=12, temperature=1.0, seed=5, stop_at_eos=False)
    free = generate(module, tok, PROMPTS[0], GenerationConfig(**kw))[0]
    assert len(free.text) >= 8
    stop = free.text[5:7]
    cut = generate(module, tok, PROMPTS[0], GenerationConfig(**kw, stop=[stop]))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[:free.text.find(stop)]
    assert cut.token_ids == free.token_ids[:len(cut.token_ids)] and len(cut.token_ids) < 12


def test_errors(lm, pretrained_dir):
    module, tok = lm
    with pytest.raises(UserError, match="no causal language-model head"):
        load_causal_lm(pretrained_dir)
    with pytest.raises(UserError, match="exceeds the model's window"):
        generate(module, tok, "the cat", GenerationConfig(max_new_tokens=10_000))
    with pytest.raises(UserError, match="--top-p"):
        GenerationConfig(top_p=0.0)


def test_cli_generate(clm_dir, pretrained_dir, capsys):
    assert main(["generate", "--model", str(clm_dir), "--prompt", "the cat", "--prompt", "a dog", "--json",
                 "--max-new-tokens", "5", "--temperature", "0.7", "--seed", "4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["the cat", "a dog"]
    assert all(r["finish_reason"] in ("eos", "stop", "length") and r["text"] for r in rows)
    assert main(["generate", "--model", str(pretrained_dir), "--prompt", "x"]) == 2
    assert "causal language-model head" in capsys.readouterr().err
