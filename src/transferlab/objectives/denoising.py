"""BART's denoising objective (Lewis et al. 2020): corrupt a block of text with any mix of five noise functions,
and train an encoder-decoder to reconstruct the original.

The noise functions are pure data (a seeded ``torch.Generator``, no model) and each has its own rate:

- ``token_masking``: each ordinary token becomes [MASK] with probability ``rate``.
- ``token_deletion``: each ordinary token is removed with probability ``rate`` (the model must find where).
- ``text_infilling``: spans with lengths drawn from Poisson(lambda=3) cover ``rate`` of the ordinary tokens; each
  span becomes ONE [MASK] (so the model must also predict how many tokens are missing); a zero-length span
  inserts a [MASK].
- ``sentence_permutation``: in each document, a fraction ``rate`` of its sentences (at least one when the rate is
  above 0, all with rate 1) is shuffled among their own slots (fairseq's rule).
- ``document_rotation``: each document is rotated, with probability ``rate``, to start at a uniformly chosen
  token other than its first; the model must find the real start.

Boundaries. Documents end with [EOS] in the token stream (``corpus prepare`` writes one after each document),
so document boundaries travel inside every packed block. Sentences end at a *sentence-end token*: a vocabulary
entry made only of punctuation that contains ``.``, ``!`` or ``?`` (``sentence_end_ids``), or at [EOS]. We split on
that token set instead of storing a sentence index in the corpus: it needs no change to the corpus format, works
on every corpus already prepared, and a block cut at an arbitrary offset still knows its sentences. A block's
unfinished first and last sentences count as sentences.

Special tokens ([EOS], ...) are never masked, deleted or moved within their document; a text-infilling span may
run across one, which then stays in place. Functions work on a right-padded batch ``ids (B, L)`` with
``lengths (B,)``; masking and deletion are vectorised over the batch, the others loop over rows and then over
documents or spans, never over tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ..errors import UserError
from ..tokenization import SPECIAL_TOKENS
from .seq2seq_lm import IGNORE, Seq2SeqLM, shift_right

N_SPECIAL = len(SPECIAL_TOKENS)
SENTENCE_END_CHARS = ".!?"
PUNCTUATION = set(".!?;:,'\"()[]«»“”‘’…-")


def sentence_end_ids(tokenizer) -> list[int]:
    """Ids of the vocabulary entries that end a sentence: only punctuation, with a '.', '!' or '?' in them.

    Subword markers are removed first (WordPiece's ``##``, byte-level BPE's ``Ġ``, unigram's ``▁``)."""
    found = []
    for i in range(N_SPECIAL, tokenizer.vocab_size):
        piece = (tokenizer.id_to_token(i) or "").replace("##", "").replace("Ġ", "").replace("▁", "")
        if piece and set(piece) <= PUNCTUATION and any(c in piece for c in SENTENCE_END_CHARS):
            found.append(i)
    return found


def _valid(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(ids.shape[1]) < lengths[:, None]


def _pack(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max()) if rows else 0), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, lengths


def token_masking(ids: torch.Tensor, lengths: torch.Tensor, rate: float, mask_id: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ordinary token -> [MASK] with probability ``rate``. Returns (ids, lengths)."""
    selected = (torch.rand(ids.shape, generator=generator) < rate) & (ids >= N_SPECIAL) & _valid(ids, lengths)
    return ids.masked_fill(selected, mask_id), lengths


def token_deletion(ids: torch.Tensor, lengths: torch.Tensor, rate: float, generator: torch.Generator,
                   pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove each ordinary token with probability ``rate``; the rest close ranks. Returns (ids, lengths)."""
    valid = _valid(ids, lengths)
    deleted = (torch.rand(ids.shape, generator=generator) < rate) & (ids >= N_SPECIAL) & valid
    keep = valid & ~deleted
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept tokens first, in order
    new_lengths = keep.sum(1)
    out = ids.gather(1, order).masked_fill(~_valid(ids, new_lengths), pad_id)
    return out[:, :max(int(new_lengths.max()), 1)], new_lengths


def text_infilling(ids: torch.Tensor, lengths: torch.Tensor, rate: float, mask_id: int,
                   generator: torch.Generator, poisson_lambda: float = 3.0,
                   pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace spans covering ``rate`` of each row's ordinary tokens with one [MASK] per span.

    Span lengths are Poisson(``poisson_lambda``), drawn until they cover round(rate x n) tokens (rounded at
    random, so the expected coverage is exact), the last one cut to fit. The spans are placed uniformly without
    overlap (stars and bars over the uncovered tokens). A zero-length span inserts a [MASK].

    Returns:
        (ids, lengths, n_spans): ``n_spans[b]`` is the number of [MASK] tokens added to row b.
    """
    rows, n_spans = [], []
    for b in range(ids.shape[0]):
        row = ids[b, :int(lengths[b])]
        where = (row >= N_SPECIAL).nonzero().squeeze(1)  # row positions of the ordinary tokens
        n = len(where)
        exact = rate * n
        target = int(exact) + int(torch.rand((), generator=generator) < exact - int(exact))
        if target == 0:
            rows.append(row)
            n_spans.append(0)
            continue
        draws = max(8, int(2 * target / max(poisson_lambda, 1e-3)) + 8)
        span_len = torch.poisson(torch.full((draws,), float(poisson_lambda)), generator=generator).long()
        while int(span_len.sum()) < target:  # rare: draw more
            more = torch.poisson(torch.full((draws,), float(poisson_lambda)), generator=generator).long()
            span_len = torch.cat([span_len, more])
        k = int((span_len.cumsum(0) < target).sum()) + 1  # spans needed to reach the target
        span_len = span_len[:k].clone()
        span_len[-1] = target - int(span_len[:-1].sum())
        gaps = torch.randint(0, n - target + 1, (k,), generator=generator).sort().values
        starts = gaps + torch.cat([span_len.new_zeros(1), span_len.cumsum(0)[:-1]])  # (k,) in ordinary index
        covered = torch.zeros(n, dtype=torch.bool)
        inner = torch.repeat_interleave(starts, span_len) + _ranges(span_len)
        covered[inner] = True
        # Sort keys put each token at 2*pos+1 and each new [MASK] at 2*pos, just before the token it precedes.
        keep = torch.ones(len(row), dtype=torch.bool)
        keep[where[covered]] = False
        positions_end = torch.cat([where, where[-1:] + 1])  # ordinary index n means "after the last one"
        mask_keys = 2 * positions_end[starts]
        keys = torch.cat([2 * torch.arange(len(row))[keep] + 1, mask_keys])
        values = torch.cat([row[keep], torch.full((k,), mask_id, dtype=row.dtype)])
        rows.append(values[torch.sort(keys, stable=True).indices])
        n_spans.append(k)
    out, new_lengths = _pack(rows, pad_id)
    return out, new_lengths, torch.tensor(n_spans, dtype=torch.long)


def _ranges(counts: torch.Tensor) -> torch.Tensor:
    """[0..c0-1, 0..c1-1, ...] for counts (k,)."""
    total = int(counts.sum())
    if total == 0:
        return counts.new_zeros(0)
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return torch.arange(total) - starts


def _units(row: torch.Tensor, ends: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a row into units: sentences (ending at a sentence-end token), and each [EOS] alone.

    Returns (unit id per token, is_eos per unit)."""
    is_eos = row == eos_id
    is_end = torch.isin(row, ends) | is_eos
    starts = torch.zeros_like(is_eos)
    starts[0] = True
    starts[1:] |= is_end[:-1]
    starts |= is_eos  # an [EOS] starts (and, through the rule above, ends) its own unit
    unit = starts.long().cumsum(0) - 1
    unit_is_eos = torch.zeros(int(unit[-1]) + 1, dtype=torch.bool)
    unit_is_eos[unit[is_eos]] = True
    return unit, unit_is_eos


def sentence_permutation(ids: torch.Tensor, lengths: torch.Tensor, rate: float, sentence_ends: torch.Tensor,
                         eos_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """In each document of each row, shuffle ceil(rate x n) of its n sentences among their own slots; [EOS]s
    stay where they are. Returns (ids, lengths)."""
    out = ids.clone()
    for b in range(ids.shape[0]):
        n_tok = int(lengths[b])
        if n_tok == 0:
            continue
        row = ids[b, :n_tok]
        unit, unit_is_eos = _units(row, sentence_ends, eos_id)
        order = torch.arange(len(unit_is_eos))
        # documents = maximal runs of non-EOS units
        doc_start = 0
        for u in range(len(unit_is_eos) + 1):
            if u == len(unit_is_eos) or unit_is_eos[u]:
                n = u - doc_start
                chosen = math.ceil(n * rate)
                if n > 1 and chosen > 1:
                    pick = torch.randperm(n, generator=generator)[:chosen] + doc_start
                    order[pick] = pick[torch.randperm(chosen, generator=generator)]
                doc_start = u + 1
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))  # unit order[i] goes to slot i
        out[b, :n_tok] = row[torch.sort(rank[unit], stable=True).indices]
    return out, lengths


def document_rotation(ids: torch.Tensor, lengths: torch.Tensor, rate: float, eos_id: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each document (a run of tokens between [EOS]s; [EOS] stays at its end) with probability ``rate``
    so that it starts at a uniformly chosen token other than its first. Returns (ids, lengths)."""
    out = ids.clone()
    for b in range(ids.shape[0]):
        n_tok = int(lengths[b])
        row = ids[b, :n_tok]
        bounds = torch.cat([torch.tensor([-1]), (row == eos_id).nonzero().squeeze(1), torch.tensor([n_tok])])
        starts, ends = bounds[:-1] + 1, bounds[1:]  # document d is row[starts[d]:ends[d]]
        sizes = ends - starts
        rotate = (torch.rand(len(sizes), generator=generator) < rate) & (sizes > 1)
        offsets = (torch.rand(len(sizes), generator=generator) * (sizes - 1).clamp(min=1)).long() + 1
        for d in rotate.nonzero().squeeze(1).tolist():
            s, e = int(starts[d]), int(ends[d])
            out[b, s:e] = torch.roll(row[s:e], -int(offsets[d]))
    return out, lengths


@dataclass
class BartCorruption:
    """blocks (B, T) of packed tokens -> a batch for ``DenoisingLM``: the noised text in the encoder, the clean
    block as the decoder's target.

    Rates: 0 turns a noise function off. Masking, deletion and infilling take rates in (0, 1); permutation and
    rotation in (0, 1] (1 = every sentence / every document). Applied in this order: sentence permutation and
    document rotation (they need the clean boundaries), then infilling, masking, deletion. The encoder input is
    cut to ``max_len`` tokens (zero-length infilling spans can lengthen a row).
    """

    mask_id: int
    bos_id: int
    eos_id: int
    sentence_end_ids: tuple[int, ...]
    max_len: int
    pad_id: int = 0
    mask: float = 0.0
    delete: float = 0.0
    infill: float = 0.3
    permute: float = 1.0
    rotate: float = 0.0
    poisson_lambda: float = 3.0

    def __post_init__(self):
        for name in ("mask", "delete", "infill"):
            value = getattr(self, name)
            if not (value == 0 or 0 < value < 1):
                raise UserError(f"--noise {name}={value}: the {name} rate must be in (0, 1), or 0 to turn it off.")
        for name in ("permute", "rotate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"--noise {name}={value}: the {name} rate must be in (0, 1] (1 = all), or 0 to "
                                f"turn it off.")
        if not self.poisson_lambda > 0:
            raise UserError(f"--noise poisson_lambda={self.poisson_lambda}: the mean span length must be > 0.")
        if not any(getattr(self, n) for n in NOISE_RATES):
            raise UserError(f"--noise turns every noise function off; give at least one of "
                            f"{', '.join(NOISE_RATES)} a rate above 0.")
        self._ends = torch.tensor(sorted(self.sentence_end_ids), dtype=torch.long)

    def noise(self, blocks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the enabled noise functions; returns the right-padded noised ids and their lengths."""
        ids, lengths = blocks, torch.full((blocks.shape[0],), blocks.shape[1], dtype=torch.long)
        if self.permute:
            ids, lengths = sentence_permutation(ids, lengths, self.permute, self._ends, self.eos_id, generator)
        if self.rotate:
            ids, lengths = document_rotation(ids, lengths, self.rotate, self.eos_id, generator)
        if self.infill:
            ids, lengths, _ = text_infilling(ids, lengths, self.infill, self.mask_id, generator,
                                             self.poisson_lambda, self.pad_id)
        if self.mask:
            ids, lengths = token_masking(ids, lengths, self.mask, self.mask_id, generator)
        if self.delete:
            ids, lengths = token_deletion(ids, lengths, self.delete, generator, self.pad_id)
        return ids[:, :self.max_len], lengths.clamp(max=self.max_len)

    def __call__(self, blocks: torch.Tensor, generator: torch.Generator) -> dict:
        ids, lengths = self.noise(blocks, generator)
        return {"input_ids": ids, "attention": _valid(ids, lengths).long(),
                "decoder_input_ids": shift_right(blocks, self.bos_id, self.pad_id), "labels": blocks}

    def block_len(self, seq_len: int) -> int:
        return seq_len


NOISE_RATES = ("mask", "delete", "infill", "permute", "rotate")
NOISE_OPTIONS = tuple(f.name for f in fields(BartCorruption) if f.name in NOISE_RATES or f.name == "poisson_lambda")


class DenoisingLM(Seq2SeqLM):
    """BART: reconstruct the clean block from its noised version (cross-entropy over every target token)."""

    kind = "bart"


__all__ = ["BartCorruption", "DenoisingLM", "token_masking", "token_deletion", "text_infilling",
           "sentence_permutation", "document_rotation", "sentence_end_ids", "IGNORE"]
