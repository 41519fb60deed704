"""A synthetic world in which transfer is needed by construction (the data behind ``transferlab demo``).

The world has ``n_categories`` latent categories of made-up words ("dalok", "mirene", ...). Which category a
word belongs to is visible only in the unlabeled corpus, through context: every category has its own verbs,
adjectives and places that co-occur with its members across many sentence templates, and documents mostly
stay on one category. The labeled task asks whether a sentence's content word belongs to super-group 1 (half
of the categories, chosen at random), but labeled sentences use only *neutral* templates whose words say
nothing about the category, and the dev set uses only words the labeled training set never contains.

So a model trained from scratch on the labeled data sees, on dev, a word it has never seen in a context that
carries no signal: it cannot beat chance. A model pretrained on the corpus has already placed the dev words
next to their category mates, and the classifier learned on the training words carries over.

Noise keeps the corpus from being trivial: some corpus sentences are neutral, some context slots are filled
from a random other category, documents wander off topic, and sentences get optional neutral openers.

Everything is drawn from numpy generators seeded explicitly, so a seed fixes the world and the files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fsutil import write_json

# Slots: {N} a member of the sentence's category, {M} a second member of the same category, {V}/{V2} verbs,
# {A}/{A2} adjectives, {P} a place. Verbs, adjectives and places are the category's context words.
CATEGORY_TEMPLATES = (
    "the {A} {N} {V} near the {P} .",
    "a {N} {V} in the {P} every morning .",
    "people say that the {N} is very {A} .",
    "the {N} and the {M} {V} together .",
    "near the {P} , a {A} {N} {V} .",
    "every {N} {V} when the day is {A} .",
    "you can find a {A} {N} in the {P} .",
    "the {N} often {V} .",
    "my friend saw a {A} {N} at the {P} .",
    "in the {P} , the {N} {V} with the {M} .",
    "no {N} {V} like the {M} does .",
    "the {P} is full of {A} {N} .",
    "a {A} {N} never {V} alone .",
    "they brought the {N} to the {P} .",
    "the {N} looked {A} after it {V} .",
    "a {A} {N} and a {A2} {M} live near the {P} .",
    "at the {P} the {N} {V} and {V2} .",
    "the {N} is the most {A} thing in the {P} .",
    "whenever a {N} {V} , a {M} {V2} too .",
    "she said the {N} {V} at the {P} yesterday .",
    "only a {A} {N} {V} before the {M} .",
    "the {M} {V} while the {N} stays {A} .",
)

# Neutral templates carry no category context: the labeled task uses only these, and the corpus uses them
# for a share of its sentences so the pretrained model has seen members in these contexts too.
NEUTRAL_TEMPLATES = (
    "i saw a {N} today .",
    "there is a {N} here .",
    "the {N} was there again .",
    "we talked about the {N} .",
    "someone mentioned a {N} yesterday .",
    "this is a {N} .",
    "my neighbour has a {N} .",
    "the {N} is on the list .",
    "look at that {N} .",
    "he wrote a story about a {N} .",
    "a {N} was mentioned in the report .",
    "they asked about the {N} .",
    "the word {N} appears twice .",
    "tell me more about the {N} .",
    "we will see the {N} tomorrow .",
    "it was just a {N} .",
    "nobody knew about the {N} .",
    "do you remember the {N} .",
)

# Optional neutral openers vary word order and sentence length in the corpus.
OPENERS = ("today ,", "then", "once again ,", "as usual ,", "later ,", "of course")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kl", "pl", "st", "tr", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "k", "m", "s")
# Part-of-speech endings make sentences read like sentences; they are shared by all categories, so they
# carry no category information.
_VERB_ENDINGS = ("es", "s")
_ADJ_ENDINGS = ("ish", "y", "ous", "ic")
_PLACE_ENDINGS = ("ford", "mere", "holm", "dale", "wick")


def _template_words(templates) -> set[str]:
    return {t for tpl in templates for t in tpl.split() if not t.startswith("{")}


NEUTRAL_WORDS = frozenset(_template_words(CATEGORY_TEMPLATES + NEUTRAL_TEMPLATES)
                          | _template_words(OPENERS))


@dataclass
class SyntheticWorld:
    """The parameters of a synthetic world; the vocabulary is derived from them in ``__post_init__``.

    Args:
        n_categories: number of latent categories (even, >= 2); half form label group 1.
        words_per_category: member pseudo-words per category.
        seed: fixes every word, the category groups and the train/test word split.
        train_word_fraction: share of each category's members that may appear in the labeled train set;
            the rest are the only members used in dev.
        n_verbs, n_adjectives, n_places: context words per category.
        p_neutral: share of corpus sentences written with a neutral template.
        p_swap: chance that a context slot is filled from a random category instead of the sentence's.
        p_off_topic: chance that a corpus sentence is about a random category instead of its document's.
        p_opener: chance that a corpus sentence starts with a neutral opener.
        doc_sentences: (min, max) sentences per corpus document.
    """

    n_categories: int = 8
    words_per_category: int = 40
    seed: int = 0
    train_word_fraction: float = 0.5
    # Measured with these defaults (2-layer/128 encoder, MLM, batch 64 x 64 tokens, lr 2e-3, 120k sentences):
    # fine-tuned dev accuracy on unseen words 0.62 after 600 steps, 0.90 after 900, 0.99 after 1200; a
    # from-scratch twin stays at 0.50. Fewer context words (5/5/4) were not clearly faster.
    n_verbs: int = 8
    n_adjectives: int = 8
    n_places: int = 6
    p_neutral: float = 0.15
    p_swap: float = 0.1
    p_off_topic: float = 0.3
    p_opener: float = 0.2
    doc_sentences: tuple[int, int] = (20, 50)

    # Derived in __post_init__ (not constructor arguments).
    members: list[list[str]] = field(init=False)
    verbs: list[list[str]] = field(init=False)
    adjectives: list[list[str]] = field(init=False)
    places: list[list[str]] = field(init=False)
    groups: list[int] = field(init=False)
    train_words: list[list[str]] = field(init=False)
    test_words: list[list[str]] = field(init=False)

    def __post_init__(self):
        self.doc_sentences = tuple(self.doc_sentences)
        if self.n_categories < 2 or self.n_categories % 2:
            raise UserError(f"synthetic world: n_categories={self.n_categories} must be an even number >= 2, "
                            "so the categories split into two equal label groups.")
        if self.words_per_category < 4:
            raise UserError(f"synthetic world: words_per_category={self.words_per_category} is too small; "
                            "use at least 4 (the demo default is 40).")
        n_train = round(self.words_per_category * self.train_word_fraction)
        if not 1 <= n_train < self.words_per_category:
            raise UserError(f"synthetic world: train_word_fraction={self.train_word_fraction} leaves no train "
                            "or no test words; use a value strictly between 0 and 1.")
        for name in ("p_neutral", "p_swap", "p_off_topic", "p_opener"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"synthetic world: {name}={getattr(self, name)} must lie in [0, 1].")
        lo, hi = self.doc_sentences
        if not 1 <= lo <= hi:
            raise UserError(f"synthetic world: doc_sentences={self.doc_sentences} must be (min, max) with "
                            "1 <= min <= max.")

        rng = np.random.default_rng(self.seed)
        used = set(NEUTRAL_WORDS)
        K = self.n_categories
        self.members = [_pseudo_words(rng, self.words_per_category, used, (2, 3), ("",)) for _ in range(K)]
        self.verbs = [_pseudo_words(rng, self.n_verbs, used, (1, 2), _VERB_ENDINGS) for _ in range(K)]
        self.adjectives = [_pseudo_words(rng, self.n_adjectives, used, (1, 2), _ADJ_ENDINGS) for _ in range(K)]
        self.places = [_pseudo_words(rng, self.n_places, used, (1, 2), _PLACE_ENDINGS) for _ in range(K)]
        group_one = rng.permutation(K)[: K // 2]
        self.groups = [int(c in group_one) for c in range(K)]
        self.train_words, self.test_words = [], []
        for words in self.members:
            order = rng.permutation(len(words))
            self.train_words.append([words[i] for i in sorted(order[:n_train])])
            self.test_words.append([words[i] for i in sorted(order[n_train:])])

    def context_words(self) -> set[str]:
        """Every word that reveals a category by co-occurrence (verbs, adjectives, places)."""
        return {w for lists in (self.verbs, self.adjectives, self.places) for ws in lists for w in ws}

    def vocabulary(self) -> list[str]:
        """Every word the corpus and the labeled files can contain (useful to size a tokenizer)."""
        members = [w for ws in self.members for w in ws]
        return sorted(NEUTRAL_WORDS) + members + sorted(self.context_words())

    def category_of(self) -> dict[str, int]:
        """Member word -> category index."""
        return {w: c for c, ws in enumerate(self.members) for w in ws}

    def to_dict(self) -> dict:
        """A JSON-ready description: parameters, categories with their words and splits, the label rule."""
        params = {k: v for k, v in asdict(self).items()
                  if k not in ("members", "verbs", "adjectives", "places", "groups", "train_words", "test_words")}
        params["doc_sentences"] = list(self.doc_sentences)
        return {
            "parameters": params,
            "label_rule": "label is 1 when the sentence's content word belongs to a category of group 1",
            "vocabulary_size": len(self.vocabulary()),
            "categories": [
                {"index": c, "group": self.groups[c], "members": self.members[c],
                 "train_words": self.train_words[c], "test_words": self.test_words[c],
                 "verbs": self.verbs[c], "adjectives": self.adjectives[c], "places": self.places[c]}
                for c in range(self.n_categories)
            ],
            "neutral_templates": list(NEUTRAL_TEMPLATES),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SyntheticWorld":
        """Rebuild a world from ``to_dict()`` output (the words are re-derived from the parameters)."""
        return cls(**d["parameters"])


def make_world(seed: int = 0, n_categories: int = 8, words_per_category: int = 40, **kwargs) -> SyntheticWorld:
    """Build a synthetic world; extra keyword arguments are ``SyntheticWorld`` fields."""
    return SyntheticWorld(n_categories=n_categories, words_per_category=words_per_category, seed=seed, **kwargs)


def _pseudo_words(rng, n: int, used: set[str], syllables: tuple[int, int], endings) -> list[str]:
    """Draw ``n`` new pronounceable words (lowercase, unique across the world) and add them to ``used``."""
    out: list[str] = []
    for _ in range(n * 1000):
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(k))
        ending = endings[rng.integers(len(endings))]
        # Readability: a vowel-initial ending gets a consonant before it ("dram-ish", not "lifai-ish"), and
        # no coda doubles the ending's first letter ("vams", not "vamss").
        codas = [c for c in _CODAS if not ending or (c != ending[0] and (c or ending[0] not in "aeiouy"))]
        word += codas[rng.integers(len(codas))] + ending
        if len(word) >= 4 and word not in used:
            used.add(word)
            out.append(word)
            if len(out) == n:
                return out
    raise UserError(f"synthetic world: could not draw {n} distinct pseudo-words; lower words_per_category "
                    "or the number of context words.")


def _pick(rng, table: list[list[str]], cats: np.ndarray, p_swap: float = 0.0) -> list[str]:
    """One word per row from ``table[cat]``, with each category replaced by a random one with prob ``p_swap``."""
    K, n = len(table), len(table[0])
    if p_swap > 0:
        cats = np.where(rng.random(len(cats)) < p_swap, rng.integers(0, K, len(cats)), cats)
    flat = np.array([w for ws in table for w in ws], dtype=object)
    return flat[cats * n + rng.integers(0, n, len(cats))].tolist()


def generate_corpus(world: SyntheticWorld, n_sentences: int, seed: int = 0) -> list[list[str]]:
    """Unlabeled documents (each a list of sentences) with ``n_sentences`` sentences in total."""
    rng = np.random.default_rng([seed, 1])
    K = world.n_categories
    lo, hi = world.doc_sentences
    lengths = rng.integers(lo, hi + 1, size=n_sentences // lo + 1)
    ends = np.cumsum(lengths)
    n_docs = int(np.searchsorted(ends, n_sentences)) + 1
    lengths = lengths[:n_docs]
    lengths[-1] -= int(ends[n_docs - 1]) - n_sentences  # the last document takes the remainder
    lengths = lengths[lengths > 0]

    doc_cat = np.repeat(rng.integers(0, K, len(lengths)), lengths)
    cats = np.where(rng.random(n_sentences) < world.p_off_topic, rng.integers(0, K, n_sentences), doc_cat)
    neutral = rng.random(n_sentences) < world.p_neutral
    tpl = np.where(neutral, rng.integers(0, len(NEUTRAL_TEMPLATES), n_sentences),
                   rng.integers(0, len(CATEGORY_TEMPLATES), n_sentences))
    W = world.words_per_category
    first = rng.integers(0, W, n_sentences)
    second = (first + rng.integers(1, W, n_sentences)) % W  # a different member of the same category
    members = np.array([w for ws in world.members for w in ws], dtype=object)
    N = members[cats * W + first].tolist()
    M = members[cats * W + second].tolist()
    V = _pick(rng, world.verbs, cats, world.p_swap)
    V2 = _pick(rng, world.verbs, cats, world.p_swap)
    A = _pick(rng, world.adjectives, cats, world.p_swap)
    A2 = _pick(rng, world.adjectives, cats, world.p_swap)
    P = _pick(rng, world.places, cats, world.p_swap)
    opener = np.where(rng.random(n_sentences) < world.p_opener, rng.integers(0, len(OPENERS), n_sentences), -1)

    neutral_l, tpl_l, opener_l = neutral.tolist(), tpl.tolist(), opener.tolist()
    sentences = []
    for i in range(n_sentences):
        if neutral_l[i]:
            s = NEUTRAL_TEMPLATES[tpl_l[i]].format(N=N[i])
        else:
            s = CATEGORY_TEMPLATES[tpl_l[i]].format(N=N[i], M=M[i], V=V[i], V2=V2[i], A=A[i], A2=A2[i], P=P[i])
        if opener_l[i] >= 0:
            s = f"{OPENERS[opener_l[i]]} {s}"
        sentences.append(s)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [sentences[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def generate_labeled(world: SyntheticWorld, n: int, split: str, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` balanced (sentence, label) pairs from neutral templates only.

    ``split="train"`` draws content words from the train words, ``"dev"`` from the held-out test words. Words
    are dealt round-robin from a shuffled list per label, so every word appears about equally often.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    rng = np.random.default_rng([seed, 2 if split == "train" else 3])
    pool = world.train_words if split == "train" else world.test_words
    labels = np.array([1] * (n // 2) + [0] * (n - n // 2))
    rng.shuffle(labels)
    words: list[str] = [""] * n
    for label in (0, 1):
        group_words = [w for c, ws in enumerate(pool) if world.groups[c] == label for w in ws]
        rows = np.flatnonzero(labels == label)
        deck: list[str] = []
        for i in rows.tolist():
            if not deck:
                deck = [group_words[j] for j in rng.permutation(len(group_words))]
            words[i] = deck.pop()
    tpl = rng.integers(0, len(NEUTRAL_TEMPLATES), n).tolist()
    return [(NEUTRAL_TEMPLATES[t].format(N=w), int(y)) for t, w, y in zip(tpl, words, labels.tolist())]


def write_world(out_dir, world: SyntheticWorld | None = None, corpus_sentences: int = 200_000,
                n_train: int = 400, n_dev: int = 400, seed: int = 0) -> dict[str, Path]:
    """Write the unlabeled corpus, the labeled train/dev files and a description of the world.

    Files in ``out_dir``: ``corpus.txt`` (one sentence per line, documents separated by two blank lines),
    ``train.tsv`` and ``dev.tsv`` (header ``sentence<TAB>label``), ``world.json``. Each file is written
    atomically and ``world.json`` last, so its presence means the set is complete.

    Args:
        out_dir: directory to write into (created if missing; other files in it are left alone).
        world: the world; ``make_world(seed=seed)`` when None.
        corpus_sentences, n_train, n_dev: sizes.
        seed: seeds the sentences (and the world when ``world`` is None).

    Returns:
        ``{"corpus": ..., "train": ..., "dev": ..., "world": ...}`` paths.
    """
    if corpus_sentences < 1 or n_train < 2 or n_dev < 2:
        raise UserError(f"synthetic world: corpus_sentences={corpus_sentences}, n_train={n_train}, "
                        f"n_dev={n_dev} are too small; use at least 1, 2 and 2.")
    world = world if world is not None else make_world(seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.txt", "train": out / "train.tsv", "dev": out / "dev.tsv",
             "world": out / "world.json"}

    docs = generate_corpus(world, corpus_sentences, seed=seed)
    _write_text(paths["corpus"], "\n\n\n".join("\n".join(d) for d in docs) + "\n")
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = generate_labeled(world, n, split, seed=seed)
        _write_text(paths[split], "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    description = world.to_dict()
    description["files"] = {"corpus_sentences": corpus_sentences, "corpus_documents": len(docs),
                            "n_train": n_train, "n_dev": n_dev, "seed": seed}
    write_json(paths["world"], description)
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
