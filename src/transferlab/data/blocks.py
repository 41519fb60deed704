"""Fixed-length token blocks from a prepared corpus, and the seeded, rank-sharded sampler that orders them.

Pretraining reads a split as one long token stream (documents back to back, EOS between them, as written by
:func:`transferlab.data.corpus.prepare_corpus`) cut into blocks of ``block_len`` tokens. Blocks are read through
a memory map, so a worker touches only the pages it needs and many processes share the page cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..fsutil import read_json

META_FILE = "meta.json"
SUPPORTED_FORMATS = (1,)


class TokenCorpus:
    """A corpus directory written by ``prepare_corpus``.

    Args:
        directory: the corpus directory (holds ``meta.json``).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            what = "does not exist" if not self.directory.exists() else f"has no {META_FILE}"
            raise UserError(
                f"Corpus directory '{self.directory}' {what}, so it is not a prepared corpus. "
                f"Run `transferlab corpus prepare` first to tokenise your text into it, then pass that directory."
            )
        self.meta: dict = read_json(meta_path)
        if self.meta.get("format") not in SUPPORTED_FORMATS:
            raise UserError(
                f"Corpus '{self.directory}' has format {self.meta.get('format')!r}, which this version of "
                f"transferlab does not read. Re-run `transferlab corpus prepare` to rebuild it."
            )
        self._tokens: dict[str, np.ndarray] = {}

    @property
    def tokenizer_sha256(self) -> str:
        return self.meta["tokenizer_sha256"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def num_tokens(self, split: str = "train") -> int:
        return int(self._split_meta(split)["tokens"])

    def tokens(self, split: str = "train") -> np.ndarray:
        """The split's token stream as a read-only memory map (uint16 or uint32)."""
        if split not in self._tokens:
            info = self._split_meta(split)
            path = self.directory / info["file"]
            dtype = np.dtype(self.meta["dtype"])
            n = int(info["tokens"])
            size = path.stat().st_size if path.is_file() else None
            if size != n * dtype.itemsize:
                found = "is missing" if size is None else f"has {size} bytes"
                raise UserError(
                    f"Corpus file '{path}' {found}, but {META_FILE} expects {n} {dtype.name} tokens "
                    f"({n * dtype.itemsize} bytes). The corpus is damaged; re-run `transferlab corpus prepare`."
                )
            # np.memmap cannot map an empty file.
            self._tokens[split] = np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
        return self._tokens[split]

    def document_starts(self, split: str = "train") -> np.ndarray:
        """int64 start offset of each document (or piece of one) in :meth:`tokens`."""
        info = self._split_meta(split)
        index = info.get("index", f"{split}.idx.npy")
        return np.load(self.directory / index, mmap_mode="r")

    def check_tokenizer(self, tokenizer) -> None:
        """Raise a ``UserError`` unless ``tokenizer`` is the one this corpus was tokenised with."""
        if tokenizer.sha256 != self.tokenizer_sha256:
            raise UserError(
                f"Corpus '{self.directory}' was tokenised with a different tokenizer (sha256 "
                f"{self.tokenizer_sha256[:12]}..., this one is {tokenizer.sha256[:12]}...), so its token ids "
                f"would mean different words. Re-run `transferlab corpus prepare` with this tokenizer, or use "
                f"the tokenizer saved in the corpus directory ('{self.directory / 'tokenizer.json'}')."
            )

    def _split_meta(self, split: str) -> dict:
        splits = self.meta["splits"]
        if split not in splits:
            raise UserError(
                f"Corpus '{self.directory}' has no split '{split}'. Known splits: {', '.join(splits)}."
            )
        return splits[split]

    def __getstate__(self):
        # A pickled np.memmap carries its whole content; DataLoader workers started with spawn/forkserver
        # would each receive a copy of the corpus. Drop the maps; they reopen lazily.
        state = self.__dict__.copy()
        state["_tokens"] = {}
        return state

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_tokens(s)}" for s in self.splits)
        return f"TokenCorpus('{self.directory}', {counts} tokens)"


class PackedBlocks(torch.utils.data.Dataset):
    """Blocks of ``block_len`` consecutive tokens of one split: block ``i`` is ``tokens[i*L:(i+1)*L]``.

    Documents are packed back to back with EOS between them (already in the stream); the tail shorter than a
    block is dropped.

    Args:
        corpus: a :class:`TokenCorpus` or its directory.
        split: "train" or "heldout".
        block_len: tokens per block (the model's sequence length).
    """

    def __init__(self, corpus: TokenCorpus | str | Path, split: str = "train", block_len: int = 128):
        self.corpus = corpus if isinstance(corpus, TokenCorpus) else TokenCorpus(corpus)
        self.split = split
        if not isinstance(block_len, int) or block_len < 1:
            raise UserError(f"--seq-len must be a positive integer, got {block_len}.")
        self.block_len = block_len
        n_tokens = self.corpus.num_tokens(split)  # raises for an unknown split
        self.n_blocks = n_tokens // block_len
        if self.n_blocks == 0:
            raise UserError(
                f"Corpus split '{split}' of '{self.corpus.directory}' has {n_tokens} tokens, fewer than one "
                f"block of {block_len}. Lower --seq-len or add text to the corpus."
            )

    @property
    def tokens(self) -> np.ndarray:
        return self.corpus.tokens(self.split)

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        if i < 0:
            i += self.n_blocks
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} out of range for {self.n_blocks} blocks")
        start = i * self.block_len
        return torch.from_numpy(self.tokens[start : start + self.block_len].astype(np.int64))

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Blocks ``indices`` stacked into a ``(B, block_len)`` int64 tensor, with one gather."""
        idx = torch.as_tensor(indices).numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_blocks):
            raise IndexError(f"block indices must be in [0, {self.n_blocks}), got {idx.min()}..{idx.max()}")
        positions = idx[:, None] * self.block_len + np.arange(self.block_len)  # (B, L)
        return torch.from_numpy(self.tokens[positions].astype(np.int64))


class InfiniteBlockSampler(torch.utils.data.Sampler[int]):
    """A deterministic, infinite stream of block indices, sharded across ranks and resumable.

    Global position ``p`` (0, 1, 2, ...) belongs to epoch ``e = p // n`` and maps to ``perm_e[p % n]``, where
    ``perm_e`` is a random permutation of the ``n`` blocks drawn from an RNG seeded by ``(seed, e)``. Rank ``r``
    of ``world_size`` takes global positions ``start + r, start + r + world_size, ...``. The stream is a function of the global
    position alone, so resuming with ``start`` = samples consumed so far (over all ranks) continues exactly,
    even with a different number of ranks; within an epoch the ranks together see every block once.

    Args:
        n_blocks: number of blocks (``len(PackedBlocks)``).
        seed: seed of the permutations.
        rank: this process's rank.
        world_size: number of ranks.
        start: global position to start from.
    """

    def __init__(self, n_blocks: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be positive, got {n_blocks}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.n_blocks = int(n_blocks)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start = int(start)
        self._epoch = -1
        self._perm: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        """The block order of ``epoch`` (cached for the current epoch)."""
        if epoch != self._epoch:
            # SeedSequence hashes (seed, epoch) together. torch.manual_seed keeps only the low 32 bits of its
            # seed, and seed + epoch would make seeds 0 and 1 share orders shifted by one epoch.
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            self._perm = rng.permutation(self.n_blocks).tolist()
            self._epoch = epoch
        return self._perm

    def index_at(self, position: int) -> int:
        """The block index at global ``position``."""
        epoch, offset = divmod(position, self.n_blocks)
        return self.permutation(epoch)[offset]

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        while True:
            yield self.index_at(position)
            position += self.world_size
