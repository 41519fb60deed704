"""Tokenizer training, round trips, special ids, save/load and errors — on tiny texts, in well under a second each."""

import pytest

from transferlab.errors import UserError
from transferlab.tokenization import SPECIAL_TOKENS, Tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A second sentence, with punctuation: commas; colons! and questions?",
    "Numbers like 1234 and 56 appear too, as do café and naïve.",
    "The dog sleeps. The fox runs away from the dog and the hunter.",
    "Transfer learning reuses what a model learned on one task for another task.",
] * 4
SAMPLES = ["The quick brown fox.", "the dog runs away, and the fox sleeps!", "café 1234"]


@pytest.fixture(scope="module", params=["bpe", "wordpiece", "unigram"])
def tokenizer(request):
    return Tokenizer.train_from_texts(TEXTS, kind=request.param, vocab_size=300)


def test_special_ids_are_fixed(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert [tokenizer.id_to_token(i) for i in range(7)] == list(SPECIAL_TOKENS)
    assert tokenizer.special_ids == list(range(7))
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (0, 1, 2, 3)
    assert (tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id) == (4, 5, 6)
    assert 7 < tokenizer.vocab_size <= 300


def test_round_trip(tokenizer):
    for text in SAMPLES:
        ids = tokenizer.encode(text)
        assert ids and all(i >= 7 for i in ids), "encode adds no special tokens"
        decoded = tokenizer.decode(ids)
        if tokenizer.kind == "wordpiece":  # WordPiece's decoder re-joins punctuation with its own spacing
            assert decoded.replace(" ", "") == text.replace(" ", "")
        else:
            assert decoded == text


def test_encode_batch_matches_encode(tokenizer):
    assert tokenizer.encode_batch(SAMPLES) == [tokenizer.encode(t) for t in SAMPLES]


def test_decode_skips_special_ids(tokenizer):
    ids = tokenizer.encode("the fox")
    wrapped = [tokenizer.bos_id] + ids + [tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(wrapped) == tokenizer.decode(ids)
    assert "[EOS]" in tokenizer.decode(wrapped, skip_special=False)


def test_literal_special_token_text_is_not_special(tokenizer):
    # "[MASK]" written in a corpus must stay text, or pretraining data would carry real mask tokens.
    ids = tokenizer.encode("the [MASK] fox [SEP] dog")
    assert not set(ids) & set(tokenizer.special_ids) - {tokenizer.unk_id}


def test_save_load_identical(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    for source in (tmp_path / "tok", path):
        loaded = Tokenizer.load(source)
        assert loaded.sha256 == tokenizer.sha256
        assert loaded.kind == tokenizer.kind
        assert loaded.encode_batch(SAMPLES) == tokenizer.encode_batch(SAMPLES)


def test_save_into_existing_directory(tokenizer, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    tokenizer.save(tmp_path)
    assert Tokenizer.load(tmp_path).sha256 == tokenizer.sha256


def test_sha_identifies_the_tokenizer():
    a = Tokenizer.train_from_texts(TEXTS, kind="bpe", vocab_size=300)
    b = Tokenizer.train_from_texts(TEXTS, kind="bpe", vocab_size=300, lowercase=True)
    assert a.sha256 != b.sha256
    # Byte-level BPE training is deterministic (WordPiece/Unigram trainers break ties in hash order).
    assert Tokenizer.train_from_texts(TEXTS, kind="bpe", vocab_size=300).sha256 == a.sha256


def test_lowercase():
    tok = Tokenizer.train_from_texts(TEXTS, kind="wordpiece", vocab_size=300, lowercase=True)
    assert tok.encode("THE FOX") == tok.encode("the fox")


def test_train_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(TEXTS[:5]) + "\n", encoding="utf-8")
    tok = Tokenizer.train([tmp_path], kind="bpe", vocab_size=300, progress=False)
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope"):
        Tokenizer.load(missing)
    missing.mkdir()
    with pytest.raises(UserError, match="no tokenizer.json"):
        Tokenizer.load(missing)


def test_load_invalid_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer"):
        Tokenizer.load(tmp_path)


def test_load_foreign_tokenizer_without_reserved_ids(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    HFTokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match=r"\[PAD\]"):
        Tokenizer.load(tmp_path)


def test_bad_options():
    with pytest.raises(UserError, match="--kind"):
        Tokenizer.train_from_texts(TEXTS, kind="sentencepiece")
    with pytest.raises(UserError, match="--vocab-size"):
        Tokenizer.train_from_texts(TEXTS, kind="bpe", vocab_size=100)
    with pytest.raises(UserError, match="empty"):
        Tokenizer.train_from_texts([], kind="wordpiece", vocab_size=300)
