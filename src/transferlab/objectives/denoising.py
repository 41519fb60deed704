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
``lengths (B,)`` and are vectorised over the whole batch (variable-length results by sorting on composite keys):
no Python loop over rows, spans or tokens. ``benchmarks/corruption.py`` times them beside a training step
(a first run on a busy shared core: 0.2-2 ms each, under 25 ms for all five, on 64x128 blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..errors import UserError
from ..inputs.text import SPECIAL_TOKENS
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
    new_lengths = keep.sum(1)
    out = ids.gather(1, _first(keep)).masked_fill(~_valid(ids, new_lengths), pad_id)
    return out[:, :max(int(new_lengths.max()), 1)], new_lengths


def _first(flags: torch.Tensor) -> torch.Tensor:
    """Per row, the positions where ``flags`` is True (ascending), then the others: a (B, T) permutation."""
    return torch.sort((~flags).to(torch.int8), dim=1, stable=True).indices


def _merge(values: torch.Tensor, keys: torch.Tensor, lengths: torch.Tensor, pad_id: int):
    """Sort each row's values by key (dead entries carry a key past every live one) and trim to the longest row."""
    out = values.gather(1, torch.sort(keys, dim=1, stable=True).indices)
    out = out[:, :max(int(lengths.max()), 1)]
    return out.masked_fill(~_valid(out, lengths), pad_id), lengths


def text_infilling(ids: torch.Tensor, lengths: torch.Tensor, rate: float, mask_id: int,
                   generator: torch.Generator, poisson_lambda: float = 3.0,
                   pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace spans covering ``rate`` of each row's ordinary tokens with one [MASK] per span.

    Span lengths are Poisson(``poisson_lambda``), drawn until they cover round(rate x n) tokens (rounded at
    random, so the expected coverage is exact), the last one cut to fit. The spans are placed uniformly without
    overlap (stars and bars: sorted uniform gaps over the uncovered tokens). A zero-length span inserts a [MASK].
    Vectorised over the batch: spans are columns of a (B, M) matrix, dead beyond each row's count.

    Returns:
        (ids, lengths, n_spans): ``n_spans[b]`` is the number of [MASK] tokens added to row b.
    """
    B, T = ids.shape
    valid = _valid(ids, lengths)
    ordinary = valid & (ids >= N_SPECIAL)
    n = ordinary.sum(1)
    exact = rate * n.double()
    target = exact.long() + (torch.rand(B, generator=generator, dtype=torch.float64) < exact - exact.floor()).long()
    if int(target.max()) == 0:
        return ids, lengths, torch.zeros(B, dtype=torch.long)
    width = int(2 * int(target.max()) / max(poisson_lambda, 1e-3)) + 16
    rates = torch.full((B, width), float(poisson_lambda))
    span = torch.poisson(rates, generator=generator).long()
    while bool((span.sum(1) < target).any()):  # rare: draw more
        span = torch.cat([span, torch.poisson(rates, generator=generator).long()], 1)
    M = span.shape[1]
    col = torch.arange(M)[None]
    k = torch.where(target > 0, (span.cumsum(1) < target[:, None]).sum(1) + 1, 0)  # spans per row
    live = col < k[:, None]
    before = span.cumsum(1) - span
    span = torch.where(col == (k - 1)[:, None], target[:, None] - before, span) * live  # last span cut to fit
    before = span.cumsum(1) - span
    gap = (torch.rand(B, M, generator=generator) * (n - target + 1)[:, None]).long()
    gap = torch.where(live, gap, T + 1).sort(1).values  # live gaps first, ascending
    start = torch.where(live, gap + before, T + 1)  # in ordinary-token index (0..n)
    # covered ordinary indices, by a difference array: +1 at each span start, -1 at its end
    delta = torch.zeros(B, T + 2, dtype=torch.long)
    delta.scatter_add_(1, start, (span > 0).long())
    delta.scatter_add_(1, torch.where(live, start + span, T + 1), -(span > 0).long())
    covered_ord = delta.cumsum(1)[:, :T] > 0
    pos = _first(ordinary)  # pos[b, i] = row position of the i-th ordinary token (for i < n[b])
    covered = torch.zeros_like(ordinary).scatter_(1, pos, covered_ord & (torch.arange(T)[None] < n[:, None]))
    # a [MASK] sorts just before the token at its span's start; index n (a span at the very end) means "after
    # the last ordinary token"
    after_last = pos.gather(1, (n - 1).clamp(min=0)[:, None]) + 1
    pos_end = torch.cat([pos, torch.zeros(B, 1, dtype=torch.long)], 1).scatter_(1, n[:, None], after_last)
    mask_key = torch.where(live, 2 * pos_end.gather(1, start.clamp(max=T)), 4 * T + 4)
    keep = valid & ~covered
    token_key = torch.where(keep, 2 * torch.arange(T)[None] + 1, 4 * T + 4)
    values = torch.cat([ids, torch.full((B, M), mask_id, dtype=ids.dtype)], 1)
    out, new_lengths = _merge(values, torch.cat([token_key, mask_key], 1), keep.sum(1) + k, pad_id)
    return out, new_lengths, k


def _units(ids: torch.Tensor, valid: torch.Tensor, ends: torch.Tensor, eos_id: int):
    """Split rows into units: sentences (ending at a sentence-end token), and every [EOS] and pad alone ("fixed").

    Returns (unit (B, T) index of each token's unit, fixed (B, T) per unit, doc (B, T) document of each unit;
    units past a row's last one are fixed)."""
    B, T = ids.shape
    fixed_tok = (ids == eos_id) | ~valid
    is_end = torch.isin(ids, ends) | fixed_tok
    starts = fixed_tok.clone()
    starts[:, 0] = True
    starts[:, 1:] |= is_end[:, :-1]
    unit = starts.long().cumsum(1) - 1
    fixed = torch.ones(B, T, dtype=torch.long).scatter_(1, unit, 0)  # units that do not exist: fixed
    fixed.scatter_reduce_(1, unit, fixed_tok.long(), "amax")
    doc = fixed.cumsum(1)  # a fixed unit closes a document
    return unit, fixed.bool(), doc


def sentence_permutation(ids: torch.Tensor, lengths: torch.Tensor, rate: float, sentence_ends: torch.Tensor,
                         eos_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """In each document of each row, shuffle ceil(rate x n) of its n sentences among their own slots; [EOS]s
    stay where they are. Vectorised over the batch by sorting on composite keys. Returns (ids, lengths)."""
    B, T = ids.shape
    unit, fixed, doc = _units(ids, _valid(ids, lengths), sentence_ends, eos_id)
    movable = ~fixed
    count = torch.zeros(B, T + 1, dtype=torch.long).scatter_add_(1, doc, movable.long())  # sentences per doc
    n = count.gather(1, doc)
    far = float(T + 2)
    # rank of each sentence within its document in a random order; the first ceil(rate x n) are chosen
    order = torch.where(movable, doc + torch.rand(B, T, generator=generator, dtype=torch.float64), far).argsort(1)
    first_of_doc = (count.cumsum(1) - count).gather(1, doc.gather(1, order))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T).expand(B, T) - first_of_doc)
    chosen_n = torch.ceil(rate * n.double()).long()
    chosen = movable & (rank < chosen_n) & (chosen_n > 1)
    # chosen slots in document order receive the chosen sentences in a random order (same count per document)
    slots = torch.where(chosen, doc + torch.arange(T) / (T + 1.0), far).argsort(1)
    units = torch.where(chosen, doc + torch.rand(B, T, generator=generator, dtype=torch.float64), far).argsort(1)
    n_chosen = chosen.sum(1, keepdim=True)
    live = torch.arange(T)[None] < n_chosen
    goes_to = torch.arange(T + 1).expand(B, T + 1).clone()  # unit -> slot: identity but for the chosen
    goes_to.scatter_(1, torch.where(live, units, T), torch.where(live, slots, T))  # column T takes the dead
    key = goes_to.gather(1, unit) * T + torch.arange(T)
    return ids.gather(1, key.argsort(1)), lengths


def document_rotation(ids: torch.Tensor, lengths: torch.Tensor, rate: float, eos_id: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each document (a run of tokens between [EOS]s; [EOS] stays at its end) with probability ``rate``
    so that it starts at a uniformly chosen token other than its first. Vectorised over the batch.
    Returns (ids, lengths)."""
    B, T = ids.shape
    fixed = (ids == eos_id) | ~_valid(ids, lengths)
    doc = fixed.long().cumsum(1)  # fixed tokens get the next document's id but never move
    t = torch.arange(T).expand(B, T)
    start = torch.full((B, T + 1), T, dtype=torch.long).scatter_reduce_(1, doc, torch.where(fixed, T, t), "amin")
    size = torch.zeros(B, T + 1, dtype=torch.long).scatter_add_(1, doc, (~fixed).long())
    rotate = (torch.rand(B, T + 1, generator=generator) < rate) & (size > 1)
    offset = (torch.rand(B, T + 1, generator=generator) * (size - 1).clamp(min=1)).long() + 1
    offset = offset * rotate
    s, L, o = start.gather(1, doc), size.gather(1, doc).clamp(min=1), offset.gather(1, doc)
    source = torch.where(fixed, t, s + (t - s + o) % L)
    return ids.gather(1, source), lengths


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
