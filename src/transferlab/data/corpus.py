"""Tokenise a text corpus once into memory-mapped token files (``transferlab corpus prepare``).

Output directory layout::

    meta.json          format, tokenizer hash, dtype, special ids, token/document counts per split, sources
    tokenizer.json     the tokenizer the tokens were made with
    train.bin          flat token ids (uint16 when the vocabulary fits, else uint32), EOS after each piece
    train.idx.npy      int64 start offset of each piece in train.bin
    heldout.bin, heldout.idx.npy

Held-out split. Each document is cut into segments of at most ``segment_tokens`` tokens, at paragraph
boundaries (a paragraph longer than a segment is cut inside). Each segment goes to ``heldout`` with probability
``heldout_fraction`` from a seeded RNG, so the split is deterministic, and held-out text comes from many
documents instead of a few whole ones. A *piece* is a run of consecutive segments of one document that landed in
the same split: it is contiguous text and ends with EOS. Usually a piece is a whole document; an EOS that is
not a document end appears only where a held-out segment was cut out of a document.

Everything streams: memory stays bounded by one batch of lines and one segment whatever the corpus size, and
the directory is written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..errors import UserError
from ..fsutil import atomic_dir, check_output_dir, write_json
from .text import expand_inputs, iter_paragraphs

FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
# Paragraphs (or characters) per encode_batch call: big enough to keep the Rust threads busy, small enough
# to keep memory flat.
_BATCH_PARAGRAPHS = 8192
_BATCH_CHARS = 8 << 20
_FLUSH_TOKENS = 1 << 20


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (< vocab_size) fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def prepare_corpus(
    inputs: Sequence[str | Path],
    tokenizer,
    out_dir: str | Path,
    heldout_fraction: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    segment_tokens: int = 2048,
) -> Path:
    """Tokenise text files into ``out_dir`` (see the module docstring for the layout).

    Args:
        inputs: text files or directories (.txt, .txt.gz, .jsonl, .jsonl.gz).
        tokenizer: a :class:`transferlab.inputs.text.Tokenizer`.
        out_dir: directory to create; an existing non-empty one is refused unless ``overwrite``.
        heldout_fraction: probability that a segment goes to the held-out split, in (0, 1).
        seed: seed of the split; the same inputs, tokenizer and seed give identical files.
        overwrite: replace an existing ``out_dir``.
        progress: show a progress bar over input bytes.
        segment_tokens: length of the units the split draws (at most this many tokens each).

    Returns:
        ``out_dir``.
    """
    from tqdm.auto import tqdm

    if not 0.0 < heldout_fraction < 1.0:
        raise UserError(
            f"--heldout-fraction must be between 0 and 1 (exclusive), got {heldout_fraction}. "
            f"The default 0.01 keeps 1% of the text for held-out evaluation."
        )
    if not isinstance(segment_tokens, int) or segment_tokens < 1:
        raise UserError(f"--segment-tokens must be a positive integer, got {segment_tokens}.")
    paths = expand_inputs(inputs)
    out_dir = check_output_dir(out_dir, overwrite, what="corpus")
    dtype = token_dtype(tokenizer.vocab_size)
    sizes = [p.stat().st_size for p in paths]

    with atomic_dir(out_dir) as tmp:
        writers = {name: _SplitWriter(tmp, name, dtype, tokenizer.eos_id) for name in SPLITS}
        splitter = _Splitter(writers, heldout_fraction, seed, segment_tokens)
        # disable=None: no bar without a terminal (its carriage-return frames would fill a log file)
        bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="prepare corpus",
                   disable=None if progress else True)
        start_time = time.perf_counter()
        done_bytes = 0
        sources = []
        try:
            for path, size in zip(paths, sizes):
                on_position = _progress_callback(bar, done_bytes)
                documents = 0
                for records in _record_batches(iter_paragraphs(path, on_position)):
                    paragraphs = [r for r in records if r is not None]
                    ids = tokenizer.encode_batch(paragraphs) if paragraphs else []
                    lengths = [len(x) for x in ids]
                    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=sum(lengths))
                    offset = 0
                    lengths_iter = iter(lengths)
                    for record in records:
                        if record is None:
                            splitter.end_document()
                            documents += 1
                        else:
                            n = next(lengths_iter)
                            splitter.add_paragraph(flat[offset : offset + n])
                            offset += n
                    if progress:
                        total = splitter.tokens
                        rate = total / max(time.perf_counter() - start_time, 1e-9)
                        bar.set_postfix_str(f"{_human(total)} tokens, {_human(rate)} tok/s", refresh=False)
                done_bytes += size
                bar.update(done_bytes - bar.n)
                sources.append({"path": str(path), "bytes": size, "documents": documents})
            splitter.finish()
        finally:
            bar.close()
            for writer in writers.values():
                writer.close()

        if writers["train"].tokens == 0:
            raise UserError(
                f"The corpus ({len(paths)} file(s): {', '.join(str(p) for p in paths[:3])}"
                f"{', ...' if len(paths) > 3 else ''}) holds no text: tokenising it gave no tokens. "
                f"Check that the files hold non-blank lines."
            )
        splits = {}
        for name, writer in writers.items():
            writer.finalize()
            splits[name] = {
                "file": writer.bin_path.name,
                "index": writer.idx_path.name,
                "tokens": writer.tokens,
                "documents": writer.pieces,
            }
        tokenizer.save(tmp)
        write_json(
            tmp / "meta.json",
            {
                "format": FORMAT_VERSION,
                "tokenizer_sha256": tokenizer.sha256,
                "tokenizer_kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size,
                "dtype": dtype.name,
                "eos_id": tokenizer.eos_id,
                "pad_id": tokenizer.pad_id,
                "splits": splits,
                "sources": sources,
                "heldout_fraction": heldout_fraction,
                "seed": seed,
                "segment_tokens": segment_tokens,
                "transferlab_version": __version__,
            },
        )
    return out_dir


class _SplitWriter:
    """Appends tokens of one split to ``NAME.bin`` and piece starts to a raw int64 file (made .npy at the end)."""

    def __init__(self, directory: Path, name: str, dtype: np.dtype, eos_id: int):
        self.bin_path = directory / f"{name}.bin"
        self.idx_path = directory / f"{name}.idx.npy"
        self._raw_idx_path = directory / f".{name}.idx.raw"
        self._bin = open(self.bin_path, "wb")
        self._idx = open(self._raw_idx_path, "wb")
        self._eos = np.array([eos_id], dtype=dtype)
        self._chunks: list[np.ndarray] = []
        self._starts: list[int] = []
        self._buffered = 0
        self.tokens = 0
        self.pieces = 0

    def start_piece(self) -> None:
        self._starts.append(self.tokens)
        self.pieces += 1

    def extend(self, chunks: list[np.ndarray]) -> None:
        for chunk in chunks:
            self._chunks.append(chunk)
            self.tokens += len(chunk)
            self._buffered += len(chunk)
        if self._buffered >= _FLUSH_TOKENS:
            self.flush()

    def end_piece(self) -> None:
        self.extend([self._eos])

    def flush(self) -> None:
        if self._chunks:
            self._bin.write(np.concatenate(self._chunks).tobytes())
            self._chunks, self._buffered = [], 0
        if self._starts:
            self._idx.write(np.asarray(self._starts, dtype=np.int64).tobytes())
            self._starts = []

    def close(self) -> None:
        if not self._bin.closed:
            self.flush()
            self._bin.close()
            self._idx.close()

    def finalize(self) -> None:
        """Turn the raw piece-start file into ``NAME.idx.npy`` without loading it whole."""
        self.close()
        out = np.lib.format.open_memmap(self.idx_path, mode="w+", dtype=np.int64, shape=(self.pieces,))
        if self.pieces:
            out[:] = np.memmap(self._raw_idx_path, dtype=np.int64, mode="r", shape=(self.pieces,))
        out.flush()
        del out
        os.remove(self._raw_idx_path)


class _Splitter:
    """Cuts documents into segments, draws each segment's split, and writes pieces (see module docstring).

    The latest finished segment is held back until the next one exists, so that at the end the last segment
    can be sent to whichever split is still empty: held-out is never empty when there are two or more
    segments, and train is never empty.
    """

    def __init__(self, writers: dict[str, _SplitWriter], heldout_fraction: float, seed: int, segment_tokens: int):
        self.writers = writers
        self.fraction = heldout_fraction
        self.rng = np.random.default_rng(seed)
        self.segment_tokens = segment_tokens
        self.current: list[np.ndarray] = []  # the segment being built
        self.current_len = 0
        self.pending: tuple[list[np.ndarray], str, bool] | None = None
        self.open_split: str | None = None  # split holding the piece being written, if any
        self.segments = {name: 0 for name in writers}
        self.tokens = 0

    def add_paragraph(self, tokens: np.ndarray) -> None:
        n = len(tokens)
        if n == 0:
            return
        self.tokens += n
        limit = self.segment_tokens
        if self.current_len and self.current_len + n > limit:
            self._close_segment(end_of_document=False)
        while n > limit:  # a paragraph longer than a segment: cut it
            self.current.append(tokens[:limit])
            self.current_len = limit
            self._close_segment(end_of_document=False)
            tokens, n = tokens[limit:], n - limit
        self.current.append(tokens)
        self.current_len += n

    def end_document(self) -> None:
        if self.current_len:
            self._close_segment(end_of_document=True)

    def finish(self) -> None:
        if self.pending is None:
            return
        chunks, split, end = self.pending
        if self.segments["train"] == 0:
            split = "train"
        elif self.segments["heldout"] == 0:
            split = "heldout"
        self._write(chunks, split, end)
        self.pending = None

    def _close_segment(self, end_of_document: bool) -> None:
        split = "heldout" if self.rng.random() < self.fraction else "train"
        if self.pending is not None:
            self._write(*self.pending)
        self.pending = (self.current, split, end_of_document)
        self.current, self.current_len = [], 0

    def _write(self, chunks: list[np.ndarray], split: str, end_of_document: bool) -> None:
        if self.open_split is not None and self.open_split != split:
            # The document continues in the other split: end this piece here.
            self.writers[self.open_split].end_piece()
            self.open_split = None
        if self.open_split is None:
            self.writers[split].start_piece()
            self.open_split = split
        self.writers[split].extend(chunks)
        self.segments[split] += 1
        if end_of_document:
            self.writers[split].end_piece()
            self.open_split = None


def _record_batches(records):
    """Group the paragraph/None stream into lists bounded in paragraphs and characters."""
    batch: list[str | None] = []
    paragraphs = chars = 0
    for record in records:
        batch.append(record)
        if record is not None:
            paragraphs += 1
            chars += len(record)
            if paragraphs >= _BATCH_PARAGRAPHS or chars >= _BATCH_CHARS:
                yield batch
                batch, paragraphs, chars = [], 0, 0
    if batch:
        yield batch


def _progress_callback(bar, done_bytes: int):
    def on_position(position: int) -> None:
        bar.update(done_bytes + position - bar.n)

    return on_position


def _human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"
