"""Sequence-to-sequence fine-tuning data: (source, target) text pairs -> encoder/decoder batches.

The task module is ``Seq2SeqLM`` (the one BART and MASS pretrain), so transfer from those checkpoints keeps the
backbone and the tied LM head. Inputs: ``source + [EOS]`` in the encoder; the decoder reads ``[BOS] + target``
and predicts ``target + [EOS]``.

Pairs are read with the labeled-file reader (TSV, CSV, JSONL, gzipped or not, validated with ``file:line``
errors): two text columns, the source and the target. A source may appear on several rows with different targets
(a word with several translations); evaluation then counts every one of them as a reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.batches import padded_length
from ..data.labeled import read_labeled
from ..errors import UserError
from ..objectives.seq2seq_lm import IGNORE, Seq2SeqLM


@dataclass
class PairSet:
    """Text pairs read from one file; ``targets`` is None for a file with sources only (generation)."""

    sources: list[str]
    targets: list[str] | None
    source: str
    lines: list[int]

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, idx) -> "PairSet":
        idx = [int(i) for i in idx]
        return PairSet([self.sources[i] for i in idx], None if self.targets is None else [self.targets[i] for i in idx],
                       self.source, [self.lines[i] for i in idx])

    def grouped(self) -> tuple[list[str], list[list[str]]]:
        """Unique sources in first-seen order, and every target given for each (the references)."""
        refs: dict[str, list[str]] = {}
        for s, t in zip(self.sources, self.targets or [None] * len(self.sources)):
            refs.setdefault(s, [])
            if t is not None:
                refs[s].append(t)
        return list(refs), list(refs.values())


def read_pairs(path, source_col: str, target_col: str | None, header: bool = True, skip_bad_rows: bool = False,
               max_examples: int | None = None) -> PairSet:
    """Read (source, target) pairs; with ``target_col=None`` sources only. Columns are names, or 0-based
    indices with ``header=False``. ``max_examples`` keeps the first N rows."""
    cols = [source_col] if target_col is None else [source_col, target_col]
    data = read_labeled(path, text_cols=cols, label_col=None, require_labels=False, header=header,
                        skip_bad_rows=skip_bad_rows)
    pairs = PairSet(data.texts_a, data.texts_b, data.source, data.lines)
    if max_examples is not None:
        if max_examples < 1:
            raise UserError(f"--max-examples must be at least 1, got {max_examples}.")
        pairs = pairs.subset(range(min(max_examples, len(pairs))))
    return pairs


def split_by_source(pairs: PairSet, dev_fraction: float, seed: int = 0) -> tuple[PairSet, PairSet]:
    """Hold out a fraction of the distinct sources, with all their targets, so no dev source is seen in training
    (a word with three translations must not leak two of them into training)."""
    if not 0 < dev_fraction < 1:
        raise UserError(f"--dev-fraction must be in (0, 1), got {dev_fraction}.")
    unique = list(dict.fromkeys(pairs.sources))
    n_dev = max(1, round(dev_fraction * len(unique)))
    if n_dev >= len(unique):
        raise UserError(f"{pairs.source} has {len(unique)} distinct sources: too few to hold out "
                        f"{dev_fraction:.0%} for dev and still train. Lower --dev-fraction or pass --dev.")
    dev_sources = set(np.asarray(unique, dtype=object)[np.random.default_rng(seed).permutation(len(unique))[:n_dev]])
    is_dev = [s in dev_sources for s in pairs.sources]
    return (pairs.subset(i for i, d in enumerate(is_dev) if not d), pairs.subset(i for i, d in enumerate(is_dev) if d))


@dataclass
class Seq2SeqExamples:
    """Tokenised pairs; ``collate`` pads a batch for ``Seq2SeqLM`` (targets may be None for generation)."""

    sources: list[list[int]]
    targets: list[list[int]] | None
    pad_id: int
    start_id: int  # the decoder's first input: [BOS], or a converted BART's decoder_start_token_id
    eos_id: int

    def __len__(self) -> int:
        return len(self.sources)

    def collate(self, idx, seed: int | None = None) -> dict:
        idx = list(idx)
        src = [self.sources[i] + [self.eos_id] for i in idx]
        ids, attention = _pad(src, self.pad_id)
        batch = {"input_ids": ids, "attention": attention}
        if self.targets is not None:
            tgt = [self.targets[i] for i in idx]
            batch["decoder_input_ids"] = _pad([[self.start_id] + t for t in tgt], self.pad_id)[0]
            batch["labels"] = _pad([t + [self.eos_id] for t in tgt], IGNORE)[0]
        return batch


def _pad(seqs: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = padded_length(max(len(s) for s in seqs))
    out = torch.full((len(seqs), T), value, dtype=torch.long)
    attention = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, :len(s)] = 1
    return out, attention


def encode_pairs(tokenizer, pairs: PairSet, max_len: int, max_target_len: int,
                 decoder_start: int | None = None) -> Seq2SeqExamples:
    """Tokenise once; sources are cut to ``max_len - 1`` tokens and targets to ``max_target_len - 1`` (room for
    [EOS]). ``decoder_start`` leads every decoder input (default [BOS]; pass ``module.config.decoder_start(bos)``)."""
    sources = [s[:max_len - 1] for s in tokenizer.encode_batch(pairs.sources)]
    targets = None
    if pairs.targets is not None:
        targets = [t[:max_target_len - 1] for t in tokenizer.encode_batch(pairs.targets)]
    start = tokenizer.bos_id if decoder_start is None else decoder_start
    return Seq2SeqExamples(sources, targets, tokenizer.pad_id, start, tokenizer.eos_id)


__all__ = ["Seq2SeqLM", "PairSet", "read_pairs", "split_by_source", "Seq2SeqExamples", "encode_pairs"]
