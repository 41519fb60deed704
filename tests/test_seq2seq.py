"""Seq2seq: generation (beam 1 == greedy), BLEU, pair reading and splitting, transfer, and the CLI end to end."""

import gzip
import json

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.evaluation.seq2seq import beam_search, corpus_metrics, generate, greedy_search
from transferlab.models import build_backbone, preset
from transferlab.objectives import Seq2SeqLM
from transferlab.tasks.seq2seq import PairSet, encode_pairs, read_pairs, split_by_source
from transferlab.recipes.seq2seq import seq2seq_from_pretrained

from conftest import SHARED_DATA, sentences

BOS, EOS = 5, 6


def run(*args) -> int:
    return main([str(a) for a in args])


def random_model(seed=0, vocab=40):
    torch.manual_seed(seed)
    cfg = preset("tiny", "encoder_decoder", vocab, max_len=64, dropout=0.0, init_std=0.5)  # peaked, varied outputs
    return Seq2SeqLM(build_backbone(cfg)).eval()


def test_beam_of_one_is_greedy():
    model = random_model()
    src = torch.randint(7, 40, (6, 9), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(src)
    attention[0, 5:] = 0
    memory = model.backbone.encode(src, attention)
    greedy = greedy_search(model, memory, attention, BOS, EOS, 12)
    beam = beam_search(model, memory, attention, BOS, EOS, 12, 1, 1.0)
    assert torch.equal(greedy, beam)
    assert len({tuple(s) for s in greedy[:, 1:].tolist()}) > 1, "a degenerate model would prove nothing"


@torch.no_grad()
def sequence_logprob(model, src, out, finished):
    """log p(out [+ EOS if finished] | src) under teacher forcing: the score beam search maximises (penalty 0)."""
    labels = torch.tensor([out + [EOS]])
    dec = torch.tensor([[BOS] + out])
    hidden = model.backbone(src[None], decoder_input_ids=dec)
    logp = torch.log_softmax(model.heads["lm"](hidden).float(), -1).gather(2, labels[..., None]).squeeze()
    return float(logp.sum() if finished else logp[:-1].sum())


def test_beam_search_finds_sequences_at_least_as_likely_as_greedy():
    model = random_model(seed=2, vocab=12)
    with torch.no_grad():
        model.backbone.wte.weight[EOS] *= 2  # make [EOS] likely enough that some outputs finish early
    src = torch.randint(7, 12, (16, 6), generator=torch.Generator().manual_seed(3))
    greedy = generate(model, src, None, BOS, EOS, max_new_tokens=6)
    beam = generate(model, src, None, BOS, EOS, max_new_tokens=6, beam_size=5, length_penalty=0.0)
    assert any(len(g) < 6 for g in greedy + beam) and any(len(g) == 6 for g in greedy + beam)
    gain = [sequence_logprob(model, src[i], beam[i], len(beam[i]) < 6)
            - sequence_logprob(model, src[i], greedy[i], len(greedy[i]) < 6) for i in range(16)]
    assert all(g >= -1e-4 for g in gain), gain
    assert any(g > 1e-3 for g in gain), "on some input the beam finds a better sequence than greedy"


def test_corpus_metrics_multi_reference_and_exact_match():
    m = corpus_metrics(["le chat", "chien", "maison"], [["le chat"], ["chiens", "chien"], ["arbre"]], "char")
    assert m["exact_match"] == pytest.approx(2 / 3)
    assert 0 < m["bleu"] < 100 and 0 < m["chrf"] < 100
    assert corpus_metrics(["a b c d"], [["a b c d"]])["bleu"] == pytest.approx(100.0)


def test_read_pairs_gz_without_header_and_split_by_source(tmp_path):
    path = tmp_path / "dict.tsv.gz"
    rows = [("cat", "chat"), ("cat", "chats"), ("dog", "chien")] + [(f"w{i}", f"m{i}") for i in range(40)]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(f"{a}\t{b}\n" for a, b in rows))
    pairs = read_pairs(path, "0", "1", header=False)
    assert len(pairs) == 43 and pairs.targets[1] == "chats" and pairs.lines[0] == 1
    sources, refs = pairs.grouped()
    assert sources[0] == "cat" and refs[0] == ["chat", "chats"]
    train, dev = split_by_source(pairs, 0.25, seed=0)
    assert not set(train.sources) & set(dev.sources), "no dev source is seen in training"
    assert len(set(dev.sources)) == round(0.25 * 42) and len(train) + len(dev) == 43
    with pytest.raises(UserError, match="no column '2'"):
        read_pairs(path, "0", "2", header=False)
    with pytest.raises(UserError, match="--dev-fraction"):
        split_by_source(pairs, 1.0)


def test_collate_shifts_targets_and_pads_labels(tokenizer):
    ex = encode_pairs(tokenizer, PairSet(["the cat", "a"], ["le chat noir", "un"], "x", [1, 2]), 16, 8)
    b = ex.collate([0, 1])
    assert (b["input_ids"][:, 0] != 0).all() and b["input_ids"][1, b["attention"][1].sum() - 1] == EOS
    assert (b["decoder_input_ids"][:, 0] == BOS).all()
    n = len(ex.targets[0])
    assert torch.equal(b["decoder_input_ids"][0, 1:n + 1], b["labels"][0, :n]), "teacher forcing: shifted by one"
    assert b["labels"][0, n] == EOS and (b["labels"][1, len(ex.targets[1]) + 1:] == -100).all()


def test_seq2seq_needs_an_encoder_decoder(pretrained_dir):
    with pytest.raises(UserError, match="needs an encoder-decoder.*'encoder'"):
        seq2seq_from_pretrained(pretrained_dir)


@pytest.fixture(scope="module")
def bart_run(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("s2s")
    assert run("pretrain", "--corpus", corpus_dir, "--objective", "bart", "--steps", 4, "--seq-len", 32,
               "--batch-size", 8, "--lm-head", "bert", "--decoder-layers", 1, "--out", d / "bart", "--quiet") == 0
    pairs = d / "pairs.tsv"  # a copy task: learnable in a few steps
    with open(pairs, "w", encoding="utf-8") as f:
        f.write("src\ttgt\n" + "".join(f"{s}\t{s}\n" for s in (" ".join(x.split()[:3]) for x in sentences(200, 7))))
    return d, pairs


def test_cli_seq2seq_train_and_generate(bart_run, capsys):
    d, pairs = bart_run
    assert run("seq2seq", "train", "--init", d / "bart" / "final", "--train", pairs, "--dev-fraction", 0.1,
               "--source-col", "src", "--target-col", "tgt", "--epochs", 3, "--batch-size", 16, "--lr", 3e-3,
               "--beam", 2, "--eval-sources", 10, "--out", d / "ft", "--quiet") == 0
    results = json.loads((d / "ft" / "results.json").read_text())
    # the LM head (BERT-style here, so it has weights) is the seq2seq head: kept, not dropped, nothing new
    assert "dropped (pretraining head): none" in results["transfer"]
    assert "new (fresh init): none" in results["transfer"]
    history = results["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"bleu", "chrf", "exact_match"} <= history[-1].keys() and 0 <= history[-1]["bleu"] <= 100
    config = json.loads((d / "ft" / "final" / "config.json").read_text())
    assert config["task"]["kind"] == "seq2seq" and config["generation"]["beam"] == 2
    assert run("seq2seq", "generate", "--model", d / "ft" / "final", "--data", pairs, "--source-col", "src",
               "--target-col", "tgt", "--beam", 1, "--out", d / "preds.tsv") == 0
    metrics = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert set(metrics) == {"loss", "bleu", "chrf", "exact_match"}
    lines = (d / "preds.tsv").read_text().splitlines()
    assert lines[0] == "line\tsource\tprediction" and len(lines) == 201 and lines[1].startswith("2\t")
    # the scratch twin: same architecture, random weights
    assert run("seq2seq", "train", "--init", "scratch", "--like", d / "bart" / "final", "--train", pairs,
               "--source-col", "src", "--target-col", "tgt", "--epochs", 1, "--batch-size", 32,
               "--out", d / "scratch", "--quiet") == 0
    assert "initialised from scratch" in json.loads((d / "scratch" / "results.json").read_text())["transfer"]


@pytest.mark.parametrize("extra,needle", [
    (["--beam", 0], "--beam must be at least 1"),
    (["--bleu-tokenize", "nope"], "--bleu-tokenize 'nope'"),
    (["--dev", "x.tsv", "--dev-fraction", 0.1], "not both"),
    (["--target-col", "nope"], "no column 'nope'"),
])
def test_cli_seq2seq_bad_settings_exit_2(bart_run, extra, needle, capsys):
    d, pairs = bart_run
    args = ["seq2seq", "train", "--init", d / "bart" / "final", "--train", pairs, "--source-col", "src",
            "--target-col", "tgt", "--out", d / "bad", "--quiet"]
    assert run(*args, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert not (d / "bad").exists()


def test_generate_refuses_a_pretraining_checkpoint(bart_run, capsys):
    d, pairs = bart_run
    assert run("seq2seq", "generate", "--model", d / "bart" / "final", "--data", pairs, "--source-col", "src") == 2
    assert "fine-tune it first" in capsys.readouterr().err


@pytest.mark.data
@pytest.mark.skipif(not (SHARED_DATA / "en_fr" / "muse_en-fr.tsv.gz").is_file(), reason="needs ../shared/data")
def test_muse_word_translation_command_runs(bart_run):
    d, _ = bart_run
    assert run("seq2seq", "train", "--init", d / "bart" / "final",
               "--train", SHARED_DATA / "en_fr" / "muse_en-fr.tsv.gz", "--no-header", "--source-col", 0,
               "--target-col", 1, "--max-examples", 200, "--dev-fraction", 0.1, "--bleu-tokenize", "char",
               "--max-target-len", 12, "--eval-sources", 10, "--epochs", 1, "--out", d / "muse", "--quiet") == 0
    results = json.loads((d / "muse" / "results.json").read_text())
    assert results["train_examples"] + results["dev_examples"] >= 190 and "bleu" in results["final"]


def test_bart_checkpoint_transfers_to_classification(bart_run):
    """BART-style classification: the input goes through encoder and decoder; the head reads the last token."""
    import transferlab

    d, _ = bart_run
    model = transferlab.from_pretrained(d / "bart" / "final", num_labels=2, verbose=False)
    assert model.report.dropped == ["heads.lm.bias", "heads.lm.dense.bias", "heads.lm.dense.weight",
                                    "heads.lm.ln.bias", "heads.lm.ln.weight"]
    assert all(k.startswith("heads.classifier.") for k in model.report.new)
    assert model.module.heads["classifier"].pooling == "last"
    assert model.predict(["the cat sat .", "a dog ran on the mat ."]).shape == (2,)


def test_classifier_commands_point_seq2seq_models_to_generate(bart_run, tmp_path, capsys):
    d, pairs = bart_run
    assert run("seq2seq", "train", "--init", d / "bart" / "final", "--train", pairs, "--source-col", "src",
               "--target-col", "tgt", "--epochs", 0.1, "--out", tmp_path / "ft", "--quiet") == 0
    assert run("evaluate", "--model", tmp_path / "ft" / "final", "--data", pairs) == 2
    assert "seq2seq generate" in capsys.readouterr().err
