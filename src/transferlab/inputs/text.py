"""Subword tokenizers: train, save, load, encode — a thin layer over Hugging Face ``tokenizers``.

A tokenizer trained here reserves ids 0..6 for :data:`SPECIAL_TOKENS`, in that order. A tokenizer converted
from a Hugging Face checkpoint keeps its own ids (BERT: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103;
GPT-2: only <|endoftext|>=50256), recorded by role in ``special_tokens.json`` beside ``tokenizer.json``. Code
never assumes constants: it asks ``tokenizer.pad_id``, ``tokenizer.special_ids`` and friends. Encoding never adds
special tokens: each objective adds the ones it needs ([CLS]/[SEP] for BERT-style inputs, [BOS]/[EOS] for
GPT-style ones) in its collate code.

The special tokens live in the vocabulary but are *not* registered as Hugging Face "added tokens". Added tokens
are matched in raw text before tokenisation, so a corpus sentence that mentions "[MASK]" (Wikipedia's article on
BERT does) would turn into a real mask token. Here raw text can never produce a special id.

Three kinds:

- ``bpe``: byte-level BPE as in GPT-2 (NFC; no unknown tokens, every byte string round-trips exactly).
- ``wordpiece``: BERT's WordPiece (BertNormalizer with optional lowercasing, punctuation split, ``##`` pieces).
- ``unigram``: SentencePiece-style unigram LM (NFKC, ``▁`` marks word starts).

Reproducibility: byte-level BPE training is deterministic, but the WordPiece and Unigram trainers of
``tokenizers`` break ties in hash-map order, so training twice on the same text can give different ids. That
is why :attr:`Tokenizer.sha256` identifies a tokenizer *file*, and why corpora and checkpoints carry a copy of
their ``tokenizer.json`` instead of a recipe to re-train it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
DEFAULT_ROLES = dict(zip(ROLES, SPECIAL_TOKENS))
# A role the vocabulary lacks borrows another one: GPT-2 has only <|endoftext|> (bos = eos, and it pads), BERT has
# no [BOS]/[EOS] ([CLS]/[SEP] stand in; documents in a corpus are separated by [SEP], as BERT's were).
_FALLBACK = {"pad": "eos", "cls": "bos", "sep": "eos", "bos": "cls", "eos": "sep"}
KINDS = ("bpe", "wordpiece", "unigram")
TOKENIZER_FILE = "tokenizer.json"
ROLES_FILE = "special_tokens.json"

# Smallest useful vocabularies: byte-level BPE needs its 256-symbol alphabet besides the specials; the others
# need room for at least a basic character set.
_MIN_VOCAB = {"bpe": len(SPECIAL_TOKENS) + 256, "wordpiece": 100, "unigram": 100}
_MODEL_TO_KIND = {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram"}
# Score given to special pieces in a unigram vocabulary so that Viterbi never picks them for raw text.
_UNIGRAM_SPECIAL_SCORE = -1e9


class Tokenizer:
    """A subword tokenizer and the ids of its special tokens.

    Args:
        hf: a ``tokenizers.Tokenizer``.
        source: where it came from (a file path), used in error messages.
        special_tokens: role ("pad", "unk", "cls", "sep", "mask", "bos", "eos") -> token string, for tokenizers
            converted from elsewhere. None: transferlab's own layout, :data:`SPECIAL_TOKENS` at ids 0..6.
    """

    def __init__(self, hf, source: str | None = None, special_tokens: dict[str, str] | None = None):
        where = f"Tokenizer '{source}'" if source else "The tokenizer"
        self.hf = hf
        self.source = source
        self._sha256: str | None = None
        self.special_tokens = dict(special_tokens) if special_tokens is not None else None
        if special_tokens is not None:
            self._roles = {}
            for role, token in special_tokens.items():
                token_id = hf.token_to_id(token) if role in ROLES else None
                if token_id is None:
                    why = f"unknown role '{role}' (roles: {', '.join(ROLES)})" if role not in ROLES else \
                        f"its {role} token {token!r} is not in the vocabulary"
                    raise UserError(f"{where}: {why}. Fix {ROLES_FILE} beside it, or convert the checkpoint again "
                                    f"with `transferlab convert --from-hf`.")
                self._roles[role] = token_id
            return
        self._roles = dict(zip(ROLES, range(len(SPECIAL_TOKENS))))
        for expected, token in enumerate(SPECIAL_TOKENS):
            got = hf.token_to_id(token)
            if got != expected:
                found = "is missing" if got is None else f"has id {got}"
                raise UserError(
                    f"{where} is not a transferlab tokenizer: special token {token} {found}, but transferlab "
                    f"reserves ids 0..6 for {', '.join(SPECIAL_TOKENS)}. Train one with "
                    f"`transferlab tokenizer train`, or convert a Hugging Face checkpoint with `transferlab convert`."
                )

    # ----------------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        inputs: Sequence[str | Path],
        kind: str = "wordpiece",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        progress: bool = True,
    ) -> "Tokenizer":
        """Train on text files or directories (read with :mod:`transferlab.data.text`, streaming).

        Args:
            inputs: files (.txt, .txt.gz, .jsonl, .jsonl.gz) or directories holding them.
            kind: "bpe", "wordpiece" or "unigram".
            vocab_size: target vocabulary size including the special tokens; a small corpus may give fewer.
            min_frequency: a merge must occur at least this often (bpe, wordpiece; unigram ignores it).
            lowercase: lowercase (and for wordpiece strip accents) before tokenising.
            progress: show the trainer's progress bars.

        Returns:
            The trained tokenizer.
        """
        from ..data.text import expand_inputs, iter_paragraph_batches

        paths = expand_inputs(inputs)
        return cls._train(iter_paragraph_batches(paths), kind, vocab_size, min_frequency, lowercase, progress)

    @classmethod
    def train_from_texts(
        cls,
        texts: Iterable[str],
        kind: str = "wordpiece",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        progress: bool = False,
    ) -> "Tokenizer":
        """Train on an iterable of strings (each one a paragraph or sentence); see :meth:`train`."""
        return cls._train(_batched(texts, 2000), kind, vocab_size, min_frequency, lowercase, progress)

    @classmethod
    def _train(cls, batches: Iterator[list[str]], kind, vocab_size, min_frequency, lowercase, progress):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        import sys

        # The trainer's bars redraw with carriage returns: in a log file (no terminal) they would be one long line.
        progress = progress and sys.stderr.isatty()
        if kind not in KINDS:
            raise UserError(f"Unknown tokenizer kind '{kind}' (--kind). Choose one of: {', '.join(KINDS)}.")
        if not isinstance(vocab_size, int) or vocab_size < _MIN_VOCAB[kind]:
            raise UserError(
                f"--vocab-size {vocab_size} is too small for a {kind} tokenizer; use at least "
                f"{_MIN_VOCAB[kind]} (typical values are 8000 to 32000)."
            )
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise UserError(f"--min-frequency must be a positive integer, got {min_frequency}.")
        specials = list(SPECIAL_TOKENS)
        # Characters that spell the special tokens are always in the vocabulary, so text such as "[MASK]" can
        # be tokenised as plain characters (unigram would otherwise fall back on the special piece).
        special_chars = sorted(set("".join(SPECIAL_TOKENS)))

        if kind == "bpe":
            hf = HFTokenizer(models.BPE())
            norms = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
            hf.normalizer = normalizers.Sequence(norms)
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=progress,
            )
        elif kind == "wordpiece":
            hf = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
            hf.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
            hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            hf.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                initial_alphabet=special_chars,
                show_progress=progress,
            )
        else:
            hf = HFTokenizer(models.Unigram())
            norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
            hf.normalizer = normalizers.Sequence(norms)
            hf.pre_tokenizer = pre_tokenizers.Metaspace()
            hf.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size,
                special_tokens=specials,
                unk_token="[UNK]",
                initial_alphabet=special_chars,
                show_progress=progress,
            )

        seen = [0]

        def counted(batches):
            for batch in batches:
                seen[0] += len(batch)
                yield batch

        hf.train_from_iterator(counted(batches), trainer=trainer)
        if seen[0] == 0:
            raise UserError(
                "The tokenizer training text is empty: the inputs hold no non-blank line. Check the corpus files."
            )
        return cls(_canonical(hf))

    # ------------------------------------------------------------------------------------------- save / load
    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load from a ``tokenizer.json`` file or a directory holding one (a tokenizer or checkpoint dir), with the
        special-token roles of a ``special_tokens.json`` beside it (converted tokenizers)."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            hint = f"'{path}' has no {TOKENIZER_FILE}" if path.is_dir() else f"'{path}' does not exist"
            raise UserError(
                f"Cannot load a tokenizer: {hint}. Pass a tokenizer.json file or a directory holding one "
                f"(e.g. the output of `transferlab tokenizer train` or a checkpoint directory)."
            )
        try:
            hf = HFTokenizer.from_file(str(file))
        except Exception as e:  # the Rust side raises plain Exception subclasses with a parse message
            raise UserError(
                f"'{file}' is not a valid tokenizer file ({e}). It may be truncated or not a Hugging Face "
                f"tokenizers JSON file; re-create it with `transferlab tokenizer train`."
            ) from None
        roles = None
        if file.name == TOKENIZER_FILE and (file.parent / ROLES_FILE).is_file():
            from ..fsutil import read_json

            roles = read_json(file.parent / ROLES_FILE)
        return cls(hf, source=str(file), special_tokens=roles)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` (and ``special_tokens.json`` for a converted tokenizer), creating the
        directory if needed; return the tokenizer file's path."""
        from ..fsutil import write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.special_tokens is not None:
            write_json(directory / ROLES_FILE, self.special_tokens)
        file = directory / TOKENIZER_FILE
        tmp = directory / f".{TOKENIZER_FILE}.tmp-{os.getpid()}"
        tmp.write_text(self.hf.to_str(pretty=True), encoding="utf-8")
        os.replace(tmp, file)
        return file

    # ------------------------------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel by the Rust side; much faster than a loop."""
        texts = list(texts)
        fast = getattr(self.hf, "encode_batch_fast", None)  # skips offset tracking (tokenizers >= 0.20)
        encodings = (fast or self.hf.encode_batch)(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special`` is False."""
        ids = [int(i) for i in ids]
        if skip_special:
            special = set(self.special_ids)
            ids = [i for i in ids if i not in special]
        return self.hf.decode(ids, skip_special_tokens=False)

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    # -------------------------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def kind(self) -> str:
        """"bpe", "wordpiece" or "unigram" (the model type's name if it is none of these)."""
        name = type(self.hf.model).__name__
        return _MODEL_TO_KIND.get(name, name.lower())

    @property
    def sha256(self) -> str:
        """Hash of the canonical serialisation; equal hashes mean identical tokenisation."""
        if self._sha256 is None:
            text = self.hf.to_str()
            if self.special_tokens is not None:  # the roles change what the ids mean
                text += "\n" + json.dumps(self.special_tokens, sort_keys=True)
            self._sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._sha256

    @property
    def special_ids(self) -> list[int]:
        """Ids that raw text never means: every role's token and every added token marked special (sorted)."""
        ids = set(self._roles.values())
        ids.update(i for i, t in self.hf.get_added_tokens_decoder().items() if t.special)
        return sorted(ids)

    def role_id(self, role: str) -> int:
        """Id of a special-token role, borrowing a stand-in where the vocabulary has none (see ``_FALLBACK``)."""
        if role in self._roles:
            return self._roles[role]
        if _FALLBACK.get(role) in self._roles:
            return self._roles[_FALLBACK[role]]
        raise UserError(f"tokenizer '{self.source or 'in memory'}' has no {role} token (it has "
                        f"{', '.join(sorted(self._roles)) or 'no special tokens'}); this objective or task needs "
                        f"one. Use a tokenizer that has it, e.g. a BERT tokenizer for masked LM.")

    pad_id = property(lambda self: self.role_id("pad"))
    unk_id = property(lambda self: self.role_id("unk"))
    cls_id = property(lambda self: self.role_id("cls"))
    sep_id = property(lambda self: self.role_id("sep"))
    mask_id = property(lambda self: self.role_id("mask"))
    bos_id = property(lambda self: self.role_id("bos"))
    eos_id = property(lambda self: self.role_id("eos"))

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ the preprocessor contract (inputs/)
    modality = "text"
    unit = "tokens"

    def record(self) -> dict:
        """The config.json entries that describe this preprocessor; its file is ``tokenizer.json`` beside them."""
        return {"inputs": {"modality": "text", "file": TOKENIZER_FILE}, "tokenizer_sha256": self.sha256}

    @classmethod
    def from_checkpoint(cls, directory: str | Path, config: dict) -> "Tokenizer":
        """The tokenizer of a checkpoint directory, checked against what its config.json recorded."""
        tokenizer = cls.load(directory)
        recorded = config.get("tokenizer_sha256")
        if recorded is not None and recorded != tokenizer.sha256:
            raise UserError(f"the tokenizer in '{directory}' is not the one its model was trained with (config.json "
                            f"records tokenizer {recorded[:12]}..., {TOKENIZER_FILE} is {tokenizer.sha256[:12]}...): "
                            f"the directory mixes files from different runs. Restore its {TOKENIZER_FILE}.")
        return tokenizer

    def check_fits(self, backbone: dict, where: str) -> None:
        """Refuse a backbone (its config dict) whose embedding table was made for another vocabulary."""
        vocab = backbone.get("vocab_size")
        if vocab is not None and self.vocab_size != vocab:
            raise UserError(f"the tokenizer in '{where}' has {self.vocab_size} tokens but the model was built for "
                            f"{vocab}; the directory mixes files from different runs. Restore its {TOKENIZER_FILE}.")

    def examples(self, data, backbone_config, max_len: int, augment=None):
        """A labeled set (``data.labeled.LabeledSet``) tokenised once into batchable examples for a classifier on
        a backbone of ``backbone_config`` (``augment`` is for image inputs; text has none)."""
        return encode_texts(self, backbone_config.family, data.texts_a, data.texts_b, max_len, data.labels,
                            data.task, type_vocab_size=backbone_config.type_vocab_size)


def encode_texts(tokenizer: Tokenizer, family: str, texts_a: list[str], texts_b: list[str] | None, max_len: int,
                 labels=None, problem: str = "classification", type_vocab_size: int = 2):
    """Tokenise once. Encoder: [CLS] a [SEP] b [SEP] with token types 0/1 (BERT; all 0 for a model with one
    token type, as RoBERTa). Decoder: a [SEP] b [EOS] (the classifier reads the last token, GPT-1 style). Pairs
    are truncated longest-first. Special ids come from the tokenizer (a converted BERT's [CLS] is 101).
    Returns ``data.batches.EncodedExamples``."""
    import numpy as np

    from ..data.batches import EncodedExamples

    ids_a = tokenizer.encode_batch(list(texts_a))
    ids_b = tokenizer.encode_batch(list(texts_b)) if texts_b is not None else [None] * len(ids_a)
    if family == "encoder":
        first, middle, last = [tokenizer.cls_id], [tokenizer.sep_id], [tokenizer.sep_id]
    else:
        first, middle, last = [], [tokenizer.sep_id], [tokenizer.eos_id]
    input_ids, token_types = [], []
    for a, b in zip(ids_a, ids_b):
        budget = max_len - len(first) - len(last) - (len(middle) if b is not None else 0)
        a, b = _truncate(a, b, budget)
        seq = first + a + (middle + b if b is not None else []) + last
        n_a = len(first) + len(a) + (len(middle) if b is not None else len(last))
        input_ids.append(seq)
        token_types.append([0] * n_a + [int(type_vocab_size > 1)] * (len(seq) - n_a))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32 if problem == "regression" else np.int64)
    return EncodedExamples(input_ids, token_types, labels, tokenizer.pad_id)


def _truncate(a: list[int], b: list[int] | None, budget: int):
    """Longest-first truncation (BERT's rule: drop a token from the longer side, ``a`` on ties) in closed form."""
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return a, b
    if 2 * min(len(a), len(b)) <= budget:  # the shorter side survives whole
        return (a[:budget - len(b)], b) if len(a) > len(b) else (a, b[:budget - len(a)])
    return a[:budget // 2], b[:budget - budget // 2]


def _batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _canonical(hf):
    """Post-process a freshly trained tokenizer (see the module docstring).

    - Drop the trainer's "added tokens", so raw text never matches a special token.
    - Unigram scores special pieces 0.0 (probability 1), so Viterbi would pick "[MASK]" out of text; give them
      a prohibitive score instead (the characters that spell them are in the alphabet, so text always has a
      cheaper path).
    """
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(hf.to_str())
    spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["content"] not in SPECIAL_TOKENS]
    model = spec["model"]
    if model["type"] == "Unigram":
        for piece in model["vocab"]:
            if piece[0] in SPECIAL_TOKENS:
                piece[1] = _UNIGRAM_SPECIAL_SCORE
    return HFTokenizer.from_str(json.dumps(spec))
