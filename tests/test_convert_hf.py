"""Hugging Face interop: tiny random transformers models -> transferlab -> logits equal; round trips lossless."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import WORDS, sentences
from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.inputs.text import encode_texts
from transferlab.training import checkpoint as ckpt
from transferlab.training.checkpoint import load_weights
from transferlab.transfer import from_pretrained, load_model
from transferlab.transfer.convert import from_hf, to_hf

transformers = pytest.importorskip("transformers")
TEXTS = ["the cat sat on the mat .", "a big red dog ran quickly under the tree and it was happy ."]


def _bert_vocab() -> list[str]:
    # BERT's layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, then word pieces.
    chars = sorted(set("".join(WORDS)) | {"."})
    return (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            + list(WORDS) + [c for c in chars if c not in WORDS] + [f"##{c}" for c in chars])


def _byte_bpe(specials_first: list[str], specials_last: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials_first, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences(300), trainer=trainer)
    tok.add_special_tokens(specials_last)  # GPT-2's <|endoftext|> and RoBERTa's <mask> come last
    return tok


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny random BERT, RoBERTa and GPT-2 (fp32, saved with their tokenizers), keyed by model_type."""
    T = transformers
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    dirs = {}

    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(_bert_vocab()) + "\n")
    bert_tok = T.BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    bert = T.BertForMaskedLM(T.BertConfig(vocab_size=len(bert_tok), hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    dirs["bert"] = root / "bert"

    rob_tok = T.PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"]),
                                        bos_token="<s>", cls_token="<s>", eos_token="</s>", sep_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    roberta = T.RobertaForMaskedLM(T.RobertaConfig(vocab_size=len(rob_tok), hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=64, type_vocab_size=1,
                                                   max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                                                   eos_token_id=2, layer_norm_eps=1e-5))
    dirs["roberta"] = root / "roberta"

    gpt_tok = T.PreTrainedTokenizerFast(tokenizer_object=_byte_bpe([], ["<|endoftext|>"]),
                                        bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    eos = gpt_tok.convert_tokens_to_ids("<|endoftext|>")
    gpt = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=len(gpt_tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                         bos_token_id=eos, eos_token_id=eos))
    dirs["gpt2"] = root / "gpt2"

    # BART with RoBERTa's tokenizer layout (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last), as facebook/bart-base.
    bart_cfg = dict(vocab_size=len(rob_tok), d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    bart = T.BartForConditionalGeneration(T.BartConfig(**bart_cfg))
    bart_cls = T.BartForSequenceClassification(T.BartConfig(**bart_cfg, num_labels=3))
    for model in (bart, bart_cls):  # LayerNorms and biases off their init, so a swapped name cannot hide
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    dirs["bart"], dirs["bart-cls"] = root / "bart", root / "bart-cls"

    for name, model, tok in (("bert", bert, bert_tok), ("roberta", roberta, rob_tok), ("gpt2", gpt, gpt_tok),
                             ("bart", bart, rob_tok), ("bart-cls", bart_cls, rob_tok)):
        model.save_pretrained(dirs[name])
        tok.save_pretrained(dirs[name])
    return dirs


def _hf_outputs(directory, texts):
    T = transformers
    tok = T.AutoTokenizer.from_pretrained(directory)
    tok.pad_token = tok.pad_token or tok.eos_token  # GPT-2 has no padding token
    model = T.AutoModelForMaskedLM if json.loads((directory / "config.json").read_text())["model_type"] != "gpt2" \
        else T.AutoModelForCausalLM
    model = model.from_pretrained(directory, attn_implementation="eager").eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return enc, out.logits, out.hidden_states[-1]


def _ours(directory, enc):
    module, tokenizer, _ = load_model(directory)
    module.eval()
    with torch.no_grad():
        hidden = module.backbone(enc["input_ids"], attention=enc["attention_mask"],
                                 token_type_ids=enc.get("token_type_ids"))
        return module.heads["lm"](hidden), hidden, tokenizer


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2"])
def test_converted_logits_match_transformers(hf_dirs, tmp_path, arch):
    src = hf_dirs[arch]
    out = from_hf(src, tmp_path / "ours", verbose=False)
    enc, hf_logits, hf_hidden = _hf_outputs(src, TEXTS)
    logits, hidden, tokenizer = _ours(out, enc)
    real = enc["attention_mask"].bool()  # padded positions are free to differ (RoBERTa numbers them differently)
    torch.testing.assert_close(hidden[real], hf_hidden[real])
    torch.testing.assert_close(logits[real], hf_logits[real])
    # the tokenizer came along, with the source's special-token ids
    hf_tok = transformers.AutoTokenizer.from_pretrained(src)
    assert tokenizer.encode(TEXTS[1]) == hf_tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    assert tokenizer.pad_id == hf_tok.pad_token_id if arch != "gpt2" else tokenizer.pad_id == hf_tok.eos_token_id
    if arch == "bert":
        assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == \
            (0, 100, 101, 102, 103)
    if arch == "gpt2":
        assert tokenizer.eos_id == tokenizer.bos_id == tokenizer.vocab_size - 1


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2"])
def test_round_trip_is_lossless(hf_dirs, tmp_path, arch):
    ours = from_hf(hf_dirs[arch], tmp_path / "ours", verbose=False)
    hf = to_hf(ours, tmp_path / "hf", verbose=False)
    again = from_hf(hf, tmp_path / "again", verbose=False)
    a, b = load_weights(ours), load_weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (ours / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    # ... and what we write is a working Hugging Face model: same logits as the original
    enc, original, _ = _hf_outputs(hf_dirs[arch], TEXTS)
    enc2, exported, _ = _hf_outputs(hf, TEXTS)
    assert torch.equal(enc["input_ids"], enc2["input_ids"])
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(exported[real], original[real], rtol=0, atol=0)


def test_fine_tuned_classifier_round_trips_through_hf(hf_dirs, tmp_path, labeled_files):
    train, dev = labeled_files
    ours = from_hf(hf_dirs["bert"], tmp_path / "ours", verbose=False)
    model = from_pretrained(ours, num_labels=2, label_names=["neg", "pos"], pooling="cls", verbose=False)
    model.compile(lr=1e-3, warmup=0.0)
    model.fit(str(train), epochs=1, batch_size=32, verbose=False)
    model.save(tmp_path / "ft")
    hf = to_hf(tmp_path / "ft", tmp_path / "hf", verbose=False)
    T = transformers
    clf = T.AutoModelForSequenceClassification.from_pretrained(hf).eval()
    assert clf.config.id2label == {0: "neg", 1: "pos"}
    enc = T.AutoTokenizer.from_pretrained(hf)(["[CLS] " + t + " [SEP]" for t in TEXTS], padding=True,
                                             add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        theirs = clf(**enc).logits
    model.module.eval()
    with torch.no_grad():
        mine = model.module({"input_ids": enc["input_ids"], "attention": enc["attention_mask"],
                             "token_type_ids": enc["token_type_ids"]})["logits"]
    torch.testing.assert_close(mine, theirs)
    back = from_hf(hf, tmp_path / "back", verbose=False)
    a, b = load_weights(tmp_path / "ft"), load_weights(back)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "bart"])
def test_converted_checkpoint_fine_tunes_from_the_cli(hf_dirs, tmp_path, labeled_files, arch):
    train, dev = labeled_files
    assert main(["convert", "--from-hf", str(hf_dirs[arch]), "--out", str(tmp_path / "ours"), "--quiet"]) == 0
    assert main(["finetune", "--init", str(tmp_path / "ours"), "--train", str(train), "--dev", str(dev),
                 "--epochs", "1", "--lr", "1e-3", "--out", str(tmp_path / "ft"), "--quiet"]) == 0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert 0.0 <= results["final"]["accuracy"] <= 1.0
    model = from_pretrained(tmp_path / "ours", num_labels=3, verbose=False)
    assert model.report.loaded and all(k.startswith("heads.classifier.") for k in model.report.new)
    # the examples are framed with the converted tokenizer's own ids (BERT: [CLS]=101, GPT-2: <|endoftext|> last,
    # BART: </s>=2)
    ids = encode_texts(model.tokenizer, model.module.config.family, ["the cat sat ."], None, 32).input_ids[0]
    if arch == "bert":
        assert ids[0] == 101 and ids[-1] == 102
    elif arch == "gpt2":
        assert ids[-1] == model.tokenizer.vocab_size - 1
    else:
        assert ids[-1] == 2


def test_masked_lm_corruption_uses_the_converted_ids(hf_dirs, tmp_path):
    from transferlab.objectives import OBJECTIVES

    ours = from_hf(hf_dirs["bert"], tmp_path / "ours", verbose=False)
    _, tokenizer, _ = load_model(ours)
    corruption = OBJECTIVES["mlm"][2](tokenizer, mask_prob=0.5)
    words = torch.tensor([tokenizer.encode(" ".join(WORDS))] * 64)
    blocks = torch.cat([words, torch.full((64, 1), tokenizer.sep_id)], 1)
    batch = corruption(blocks, torch.Generator().manual_seed(0))
    assert (batch["input_ids"][:, 0] == 101).all()
    assert (batch["input_ids"] == 103).any()
    selected = batch["labels"] != -100
    assert not selected[:, -1].any(), "[SEP]=102 is special: never selected"
    replaced = batch["input_ids"][selected]
    assert not torch.isin(replaced, torch.tensor([0, 100, 101, 102])).any(), "random draws are never special"
    assert (replaced == 103).float().mean() > 0.7, "80% of the selected tokens become [MASK]=103"


@pytest.mark.parametrize("model_type", ["t5", "marian"])
def test_unsupported_architecture_is_refused_with_the_list(tmp_path, model_type, capsys):
    src = tmp_path / model_type
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": model_type, "d_model": 32}))
    with pytest.raises(UserError, match=r"not supported.*bert.*roberta.*gpt2.*bart.*BartForConditionalGeneration"):
        from_hf(src, tmp_path / "out", verbose=False)
    assert main(["convert", "--from-hf", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "BertForMaskedLM" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pre_norm_encoder_is_refused_by_to_hf(pretrained_dir, tmp_path):
    with pytest.raises(UserError, match="pre-norm encoder"):
        to_hf(pretrained_dir, tmp_path / "hf", verbose=False)
    assert not (tmp_path / "hf").exists()


def test_classifier_pooling_the_mean_is_refused_by_to_hf(hf_dirs, tmp_path, capsys):
    """HF BertForSequenceClassification reads [CLS]; our default head averages the tokens."""
    ours = from_hf(hf_dirs["bert"], tmp_path / "ours", verbose=False)
    model = from_pretrained(ours, num_labels=2, verbose=False)
    assert model.module.heads["classifier"].pooling == "mean"
    model.save(tmp_path / "ft")
    assert main(["convert", "--to-hf", str(tmp_path / "ft"), "--out", str(tmp_path / "hf")]) == 2
    assert "pools the 'mean'" in capsys.readouterr().err and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("flags,needles", [
    # BERT-shaped in every other way (post-norm, BERT's LM head), but HF BERT has no rotary attention
    (["--norm", "post", "--lm-head", "bert"], ["uses rotary positions", "--position learned"]),
    # our bart pretraining's default is pre-norm; HF BART is post-norm
    (["--objective", "bart", "--position", "learned"], ["pre-norm encoder-decoder", "--norm post"]),
    # HF BART's and GPT-2's LM head is the tied embedding alone: BERT's transform would be lost on the way out
    (["--objective", "bart", "--norm", "post", "--position", "learned", "--lm-head", "bert"],
     ["'bert' LM head", "--lm-head tied"]),
    (["--objective", "clm", "--position", "learned", "--lm-head", "bert"], ["'bert' LM head", "--lm-head tied"]),
])
def test_own_pretraining_without_a_hf_counterpart_is_refused_by_to_hf(corpus_dir, tmp_path, capsys, flags, needles):
    run = tmp_path / "run"
    assert main(["pretrain", "--corpus", str(corpus_dir), "--steps", "2", "--seq-len", "32", "--batch-size", "4",
                 *flags, "--out", str(run), "--quiet"]) == 0
    assert main(["convert", "--to-hf", str(run / "final"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    assert not (tmp_path / "hf").exists()


def test_pickled_weights_and_slow_tokenizer_files_are_read(hf_dirs, tmp_path):
    """An older save: pytorch_model.bin (read with weights_only=True) and vocab.txt without tokenizer.json."""
    import shutil

    from safetensors.torch import load_file

    src = tmp_path / "old"
    shutil.copytree(hf_dirs["bert"], src)
    torch.save(load_file(str(src / "model.safetensors")), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    (src / "tokenizer.json").unlink()
    (src / "vocab.txt").write_text("\n".join(_bert_vocab()) + "\n")
    old = from_hf(src, tmp_path / "a", verbose=False)
    new = from_hf(hf_dirs["bert"], tmp_path / "b", verbose=False)
    a, b = load_weights(old), load_weights(new)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, tok_old, _ = load_model(old)
    _, tok_new, _ = load_model(new)
    assert tok_old.encode(TEXTS[1]) == tok_new.encode(TEXTS[1])
    assert tok_old.special_ids == tok_new.special_ids == [0, 100, 101, 102, 103]


def test_own_bert_style_pretraining_exports_to_transformers(corpus_dir, tmp_path):
    """`pretrain --norm post --lm-head bert --position learned` -> `convert --to-hf` -> transformers gives our
    logits, our tokens."""
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    final = pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "run"), model="tiny", seq_len=32,
                                    batch_size=8, steps=3, progress=False, eval_batches=1, lm_head="bert",
                                    norm="post", position="learned", precision="fp32"))
    assert main(["convert", "--to-hf", str(final), "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    enc, hf_logits, _ = _hf_outputs(tmp_path / "hf", TEXTS)
    logits, _, tokenizer = _ours(final, enc)
    n = len(tokenizer.encode(TEXTS[0])) + 2
    assert enc["input_ids"][0, :n].tolist() == [tokenizer.cls_id] + tokenizer.encode(TEXTS[0]) + [tokenizer.sep_id]
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(logits[real], hf_logits[real])


def test_a_special_token_missing_from_the_vocabulary_is_reported(hf_dirs, tmp_path):
    ours = from_hf(hf_dirs["bert"], tmp_path / "ours", verbose=False)
    (ours / "special_tokens.json").write_text(json.dumps({"pad": "[PAD]", "mask": "<mask>"}))
    (ours / "complete.json").unlink()  # re-seal the hand-edited checkpoint, or the loader reports a partial copy
    ckpt._write_marker(ours)
    with pytest.raises(UserError, match=r"mask token '<mask>' is not in the vocabulary.*special_tokens.json"):
        from_pretrained(ours, num_labels=2, verbose=False)


# ------------------------------------------------------------------------------------------------------------ BART
def _bart_inputs(tokenizer, texts):
    """Texts framed as our encoder-decoder fine-tuning frames them (a [EOS]), right-padded: (ids, attention)."""
    ex = encode_texts(tokenizer, "encoder_decoder", texts, None, 64)
    n = max(len(s) for s in ex.input_ids)
    ids = torch.full((len(texts), n), tokenizer.pad_id)
    attention = torch.zeros((len(texts), n), dtype=torch.long)
    for i, s in enumerate(ex.input_ids):
        ids[i, :len(s)], attention[i, :len(s)] = torch.tensor(s), 1
    return ids, attention


def _hf_bart(directory, cls="AutoModelForSeq2SeqLM"):
    return getattr(transformers, cls).from_pretrained(directory, attn_implementation="eager").eval()


def test_converted_bart_matches_transformers(hf_dirs, tmp_path):
    """Teacher-forced logits, the decoder input BART derives itself (input shifted right behind
    decoder_start_token_id), and greedy generation: all as in transformers."""
    from transferlab.evaluation.seq2seq import generate

    out = from_hf(hf_dirs["bart"], tmp_path / "ours", verbose=False)
    module, tokenizer, config = load_model(out)
    module.eval()
    assert config["task"]["kind"] == "seq2seq"
    assert (module.config.n_layer, module.config.n_dec_layer, module.config.decoder_start_id) == (2, 3, 2)
    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id) == (0, 1, 2)
    hf = _hf_bart(hf_dirs["bart"])
    ids, attention = _bart_inputs(tokenizer, TEXTS)
    assert attention[0].sum() < attention[1].sum(), "the first row is padded"
    decoder_ids = torch.randint(4, tokenizer.vocab_size - 1, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder_ids).logits
        mine = module.heads["lm"](module.backbone(ids, attention=attention, decoder_input_ids=decoder_ids))
        torch.testing.assert_close(mine, theirs)
        theirs = hf(input_ids=ids, attention_mask=attention).logits
        mine = module.heads["lm"](module.backbone(ids, attention=attention))
        real = attention.bool()
        torch.testing.assert_close(mine[real], theirs[real])
        hf_ids = hf.generate(input_ids=ids, attention_mask=attention, max_new_tokens=8, num_beams=1, do_sample=False,
                             min_length=0, no_repeat_ngram_size=0, forced_bos_token_id=None, forced_eos_token_id=None)
    expected = [(s[1:s.index(2, 1)] if 2 in s[1:] else s[1:]) for s in hf_ids.tolist()]
    assert generate(module, ids, attention, module.config.decoder_start(tokenizer.bos_id), tokenizer.eos_id, 8) \
        == expected


def test_bart_round_trip_is_lossless(hf_dirs, tmp_path):
    ours = from_hf(hf_dirs["bart"], tmp_path / "ours", verbose=False)
    hf = to_hf(ours, tmp_path / "hf", verbose=False)
    again = from_hf(hf, tmp_path / "again", verbose=False)
    a, b = load_weights(ours), load_weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (ours / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    written = json.loads((hf / "config.json").read_text())
    assert written["architectures"] == ["BartForConditionalGeneration"] and written["decoder_start_token_id"] == 2
    _, tokenizer, _ = load_model(ours)
    ids, attention = _bart_inputs(tokenizer, TEXTS)
    decoder_ids = ids[:, :6]
    with torch.no_grad():
        original = _hf_bart(hf_dirs["bart"])(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder_ids)
        exported = _hf_bart(hf)(input_ids=ids, attention_mask=attention, decoder_input_ids=decoder_ids)
    torch.testing.assert_close(exported.logits, original.logits, rtol=0, atol=0)


def test_bart_sequence_classifier_converts_both_ways(hf_dirs, tmp_path, labeled_files):
    """A BartForSequenceClassification reads the decoder at the last [EOS]; so does the converted classifier. And a
    classifier fine-tuned here from a converted BART exports to one that gives our logits."""
    train, _ = labeled_files
    ours = from_hf(hf_dirs["bart-cls"], tmp_path / "cls", verbose=False)
    module, tokenizer, config = load_model(ours)
    module.eval()
    assert config["task"]["kind"] == "classification" and config["task"]["pooling"] == "last"
    ids, attention = _bart_inputs(tokenizer, TEXTS)
    with torch.no_grad():
        theirs = _hf_bart(hf_dirs["bart-cls"], "AutoModelForSequenceClassification")(
            input_ids=ids, attention_mask=attention).logits
        mine = module({"input_ids": ids, "attention": attention})["logits"]
    torch.testing.assert_close(mine, theirs)

    base = from_hf(hf_dirs["bart"], tmp_path / "base", verbose=False)
    model = from_pretrained(base, num_labels=2, label_names=["neg", "pos"], verbose=False)
    assert model.report.loaded and all(k.startswith("heads.classifier.") for k in model.report.new)
    model.compile(lr=1e-3, warmup=0.0)
    model.fit(str(train), epochs=1, batch_size=32, verbose=False)
    model.save(tmp_path / "ft")
    hf = to_hf(tmp_path / "ft", tmp_path / "hf", verbose=False)
    clf = _hf_bart(hf, "AutoModelForSequenceClassification")
    assert clf.config.id2label == {0: "neg", 1: "pos"}
    model.module.eval()
    with torch.no_grad():
        theirs = clf(input_ids=ids, attention_mask=attention).logits
        mine = model.module({"input_ids": ids, "attention": attention})["logits"]
    torch.testing.assert_close(mine, theirs)
    back = from_hf(hf, tmp_path / "back", verbose=False)
    a, b = load_weights(tmp_path / "ft"), load_weights(back)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_converted_bart_fine_tunes_as_seq2seq_from_the_cli(hf_dirs, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("src\ttgt\n" + "".join(f"{s}\t{s.upper()}\n" for s in sentences(60)))
    assert main(["convert", "--from-hf", str(hf_dirs["bart"]), "--out", str(tmp_path / "ours"), "--quiet"]) == 0
    assert main(["seq2seq", "train", "--init", str(tmp_path / "ours"), "--train", str(pairs), "--source-col", "src",
                 "--target-col", "tgt", "--dev-fraction", "0.2", "--epochs", "1", "--eval-sources", "4",
                 "--out", str(tmp_path / "ft"), "--quiet"]) == 0
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert "new (fresh init): none" in results["transfer"] and "bleu" in results["final"]


def test_own_bart_pretraining_exports_to_transformers(corpus_dir, tmp_path):
    """`pretrain --objective bart --norm post --position learned` -> `convert --to-hf` -> transformers gives our
    logits; its tokenizer frames text as a [EOS]; a classifier fine-tuned from our own BART is refused (its
    decoder reads the input unshifted, transformers' shifted)."""
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    final = pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "run"), objective="bart",
                                    model="tiny", seq_len=32, batch_size=8, steps=3, progress=False, eval_batches=1,
                                    norm="post", position="learned", precision="fp32"))
    assert main(["convert", "--to-hf", str(final), "--out", str(tmp_path / "hf"), "--quiet"]) == 0
    module, tokenizer, _ = load_model(final)
    module.eval()
    ids, attention = _bart_inputs(tokenizer, TEXTS)
    enc = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], ids) and torch.equal(enc["attention_mask"], attention)
    decoder_ids = torch.cat([torch.full((2, 1), tokenizer.bos_id), ids[:, :7]], 1)
    with torch.no_grad():
        theirs = _hf_bart(tmp_path / "hf")(**enc, decoder_input_ids=decoder_ids).logits
        mine = module.heads["lm"](module.backbone(ids, attention=attention, decoder_input_ids=decoder_ids))
    torch.testing.assert_close(mine, theirs)
    from_pretrained(final, num_labels=2, verbose=False).save(tmp_path / "clf")
    with pytest.raises(UserError, match="reads the input unshifted"):
        to_hf(tmp_path / "clf", tmp_path / "hf-clf", verbose=False)
    assert not (tmp_path / "hf-clf").exists()


@pytest.mark.parametrize("change,needle", [
    ({"scale_embedding": True}, "scale_embedding=True is not supported"),
    ({"decoder_attention_heads": 1}, "encoder_attention_heads=2 differs from decoder_attention_heads=1"),
    ("bias", "final_logits_bias is not zero"),
])
def test_bart_variants_we_cannot_represent_are_refused(hf_dirs, tmp_path, change, needle):
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "variant"
    shutil.copytree(hf_dirs["bart"], src)
    if change == "bias":
        weights = load_file(str(src / "model.safetensors"))
        weights["final_logits_bias"][0, 5] = 1.0
        save_file(weights, str(src / "model.safetensors"), metadata={"format": "pt"})
    else:
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UserError, match=needle):
        from_hf(src, tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_bart_export_refuses_another_layer_norm_eps():
    """Encoder-decoders pretrained before eps 1e-5 became their default: BART's eps is not in its config."""
    from pathlib import Path

    from transferlab.models import ModelConfig
    from transferlab.transfer.convert import _target_arch

    backbone = ModelConfig(family="encoder_decoder", norm="post", norm_eps=1e-12).to_dict()
    with pytest.raises(UserError, match=r"LayerNorm eps 1e-12; Hugging Face bart's is fixed at 1e-05"):
        _target_arch({"backbone": backbone}, Path("old-bart"))
    assert _target_arch({"backbone": {**backbone, "norm_eps": 1e-5}}, Path("new-bart")).model_type == "bart"
