"""The synthetic demo world: files, determinism, and the property the demo rests on.

The property, checked without any neural network: word-in-sentence co-occurrence counts from the unlabeled
corpus separate the label groups of words the labeled train set never contains, while the labeled data alone
carries no signal about the dev words (a bag-of-words classifier sits at chance).
"""

import time

import numpy as np
import pytest

from transferlab.data.synthetic import (
    NEUTRAL_TEMPLATES,
    NEUTRAL_WORDS,
    SyntheticWorld,
    generate_corpus,
    make_world,
    write_world,
)
from transferlab.errors import UserError
from transferlab.fsutil import read_json


@pytest.fixture(scope="module")
def world():
    return make_world(seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, world):
    out = tmp_path_factory.mktemp("world")
    return write_world(out, world, corpus_sentences=20_000, n_train=400, n_dev=400, seed=0)


def read_tsv(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    rows = [line.split("\t") for line in lines[1:]]
    return [s for s, _ in rows], np.array([int(y) for _, y in rows])


def content_word(sentence, world):
    members = world.category_of()
    found = [t for t in sentence.split() if t in members]
    assert len(found) == 1, sentence
    return found[0]


def test_world_vocabulary(world):
    members = [w for ws in world.members for w in ws]
    assert len(world.members) == 8 and all(len(ws) == 40 for ws in world.members)
    vocab = world.vocabulary()
    assert len(vocab) == len(set(vocab)), "words must be unique across categories and roles"
    assert all(w.isalpha() and w.islower() for w in members + sorted(world.context_words()))
    assert not set(members) & NEUTRAL_WORDS
    assert len(vocab) < 1000, "the demo's tokenizer and tiny model need a modest vocabulary"
    assert sum(world.groups) == world.n_categories // 2
    for train, test, ws in zip(world.train_words, world.test_words, world.members):
        assert not set(train) & set(test) and sorted(train + test) == sorted(ws)


def test_world_is_deterministic_and_round_trips(world):
    again = make_world(seed=0)
    assert again.members == world.members and again.groups == world.groups
    assert again.test_words == world.test_words
    assert make_world(seed=1).members != world.members
    rebuilt = SyntheticWorld.from_dict(world.to_dict())
    assert rebuilt.to_dict() == world.to_dict()
    assert generate_corpus(world, 500, seed=3) == generate_corpus(world, 500, seed=3)


def test_bad_parameters_raise_user_error():
    with pytest.raises(UserError, match="n_categories"):
        make_world(n_categories=3)
    with pytest.raises(UserError, match="train_word_fraction"):
        make_world(train_word_fraction=1.0)


def test_files(files, world):
    assert set(files) == {"corpus", "train", "dev", "world"}
    text = files["corpus"].read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n\n")]
    assert len(docs) > 1 and all(20 <= len(d.strip().split("\n")) <= 50 for d in docs[:-1])
    sentences = [s for d in docs for s in d.strip().split("\n")]
    assert len(sentences) == 20_000
    vocab = set(world.vocabulary())
    for s in sentences[:2000]:
        assert s.endswith(" .") and s == s.lower() and set(s.split()) <= vocab, s
    description = read_json(files["world"])
    assert description["categories"][0]["members"] == world.members[0]
    assert description["files"]["corpus_sentences"] == 20_000


def test_labeled_data_carries_no_context_and_dev_words_are_unseen(files, world):
    train_s, train_y = read_tsv(files["train"])
    dev_s, dev_y = read_tsv(files["dev"])
    assert len(train_s) == 400 and len(dev_s) == 400
    assert train_y.sum() == 200 and dev_y.sum() == 200, "labels must be balanced"

    context = world.context_words()
    category = world.category_of()
    templates = {t.replace("{N}", "_") for t in NEUTRAL_TEMPLATES}
    for sentences, labels in ((train_s, train_y), (dev_s, dev_y)):
        for s, y in zip(sentences, labels):
            w = content_word(s, world)
            assert not set(s.split()) & context, s
            assert s.replace(f" {w} ", " _ ") in templates, s
            assert world.groups[category[w]] == y
    train_words = {content_word(s, world) for s in train_s}
    dev_words = {content_word(s, world) for s in dev_s}
    assert not train_words & dev_words
    assert train_words <= {w for ws in world.train_words for w in ws}
    assert dev_words <= {w for ws in world.test_words for w in ws}


def test_labeled_data_alone_gives_chance_on_dev(files):
    """Naive Bayes on bag of words: fits train, but dev sentences hold only unseen words + neutral templates."""
    train_s, train_y = read_tsv(files["train"])
    dev_s, dev_y = read_tsv(files["dev"])
    vocab = {t: i for i, t in enumerate(sorted({t for s in train_s + dev_s for t in s.split()}))}

    def bow(sentences):
        X = np.zeros((len(sentences), len(vocab)))
        for r, s in enumerate(sentences):
            for t in s.split():
                X[r, vocab[t]] += 1
        return X

    Xtr, Xdv = bow(train_s), bow(dev_s)
    log_p = np.stack([np.log((Xtr[train_y == k].sum(0) + 1) / (Xtr[train_y == k].sum() + len(vocab)))
                      for k in (0, 1)])
    train_acc = ((Xtr @ log_p.T).argmax(1) == train_y).mean()
    dev_acc = ((Xdv @ log_p.T).argmax(1) == dev_y).mean()
    assert train_acc > 0.9, "the labeled train set is learnable by memorising words"
    assert abs(dev_acc - 0.5) < 0.08, f"dev must be at chance without the corpus, got {dev_acc:.3f}"


def cooccurrence(world, docs):
    """Counts of (word, other word in the same sentence) over the corpus, as a [V, V] matrix."""
    vocab = world.vocabulary()
    index = {w: i for i, w in enumerate(vocab)}
    sentences = [s.split() for d in docs for s in d]
    length = max(map(len, sentences))
    ids = np.full((len(sentences), length), -1, dtype=np.int64)
    for r, toks in enumerate(sentences):
        ids[r, : len(toks)] = [index[t] for t in toks]
    V = len(vocab)
    counts = np.zeros(V * V, dtype=np.int64)
    for i in range(length):
        for j in range(length):
            ok = (ids[:, i] >= 0) & (ids[:, j] >= 0)
            if i != j and ok.any():
                counts += np.bincount(ids[ok, i] * V + ids[ok, j], minlength=V * V)
    return counts.reshape(V, V), index


def nearest_centroid_accuracy(world, counts, index, columns):
    """Fit group centroids on the train words' co-occurrence profiles; classify the held-out test words."""
    category = world.category_of()
    groups = np.array(world.groups)

    def profiles(words):
        X = counts[[index[w] for w in words]][:, columns].astype(float)
        X = np.sqrt(X / np.maximum(X.sum(1, keepdims=True), 1))  # Hellinger: tames frequent words
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    train = [w for ws in world.train_words for w in ws]
    test = [w for ws in world.test_words for w in ws]
    Xtr, Xte = profiles(train), profiles(test)
    ytr = groups[[category[w] for w in train]]
    yte = groups[[category[w] for w in test]]
    centroids = np.stack([Xtr[ytr == k].mean(0) for k in (0, 1)])
    return float(((Xte @ centroids.T).argmax(1) == yte).mean())


def test_corpus_context_reveals_the_group_of_unseen_words(files, world):
    docs = [d.strip().split("\n") for d in files["corpus"].read_text(encoding="utf-8").split("\n\n\n")]
    counts, index = cooccurrence(world, docs)
    context_cols = [index[w] for w in sorted(world.context_words())]
    neutral_cols = [index[w] for w in sorted(NEUTRAL_WORDS)]
    assert nearest_centroid_accuracy(world, counts, index, context_cols) > 0.95
    # Control: neutral filler words must not reveal the category.
    assert abs(nearest_centroid_accuracy(world, counts, index, neutral_cols) - 0.5) < 0.15


def test_generation_is_fast(tmp_path, world):
    start = time.perf_counter()
    write_world(tmp_path, world, corpus_sentences=200_000, n_train=400, n_dev=400)
    assert time.perf_counter() - start < 15, "200k sentences should take a few seconds"
