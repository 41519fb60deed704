"""Batch sources: the loop asks ``source.batch(step)`` and gets a dict of tensors.

A batch is a pure function of (seed, step), so resuming at step s reproduces exactly the batches an
uninterrupted run would have seen, and rank r of a data-parallel world takes its own slice of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .blocks import InfiniteBlockSampler, PackedBlocks


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


@dataclass(kw_only=True)
class _Stream:
    """What the pretraining sources share: ``global_batch`` items per step drawn from an infinite seeded stream
    (a fresh permutation every epoch), the whole global batch made and corrupted with the step's generator, then
    this rank keeping every ``world_size``-th row, so the union over ranks is exactly the batch a single process
    would train on (masks included). Subclasses call ``_stream(n)`` with the number of items they draw from."""

    global_batch: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    steps_per_epoch: int | None = None  # an infinite stream

    def _stream(self, n: int) -> None:
        self.order = InfiniteBlockSampler(n, self.seed)

    def _ids(self, step: int) -> list[int]:
        return [self.order.index_at(p) for p in range(step * self.global_batch, (step + 1) * self.global_batch)]

    def _this_rank(self, batch: dict) -> dict:
        if self.world_size == 1:
            return batch
        return {k: v[self.rank::self.world_size] for k, v in batch.items()}


@dataclass
class BlockBatches(_Stream):
    """Pretraining batches of text: packed token blocks from the stream, then the objective's corruption."""

    blocks: PackedBlocks
    corruption: Callable[[torch.Tensor, torch.Generator], dict]

    def __post_init__(self):
        self._stream(len(self.blocks))

    def batch(self, step: int) -> dict:
        tokens = self.blocks.get_batch(np.asarray(self._ids(step), dtype=np.int64))
        return self._this_rank(self.corruption(tokens, step_generator(self.seed, step)))


# Sequence lengths of a padded batch are rounded up to this. On CPU, bf16 matmuls run through oneDNN, which compiles
# and caches a kernel per distinct shape: with a batch as long as its longest sequence, every new length added one,
# and RSS climbed by GBs over a fine-tuning run (benchmarks/memory.py); rounding keeps the shapes few.
LENGTH_MULTIPLE = 16


def padded_length(longest: int, multiple: int = LENGTH_MULTIPLE) -> int:
    return -(-longest // multiple) * multiple


@dataclass
class EncodedExamples:
    """Tokenised labeled examples, ready to pad into batches."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray | None  # int64 class ids or float32 targets
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def collate(self, idx, seed: int | None = None) -> dict:
        """The examples at ``idx``, padded (``seed`` is for augmentation, which text has none of)."""
        seqs = [self.input_ids[i] for i in idx]
        T = padded_length(max(len(s) for s in seqs))
        ids = np.full((len(seqs), T), self.pad_id, dtype=np.int64)
        types = np.zeros((len(seqs), T), dtype=np.int64)
        attention = np.zeros((len(seqs), T), dtype=np.int64)
        for row, i in enumerate(idx):
            n = len(self.input_ids[i])
            ids[row, :n] = self.input_ids[i]
            types[row, :n] = self.token_type_ids[i]
            attention[row, :n] = 1
        batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                 "attention": torch.from_numpy(attention)}
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[np.asarray(idx)])
        return batch

    def subset(self, idx) -> "EncodedExamples":
        idx = list(idx)
        return EncodedExamples([self.input_ids[i] for i in idx], [self.token_type_ids[i] for i in idx],
                               None if self.labels is None else self.labels[np.asarray(idx)], self.pad_id)


MAX_VIEWS = 16  # views per image a batch may ask for (their seeds are seed * MAX_VIEWS + view)
CORRUPTION_STREAM = 2**40  # added to seed * MAX_VIEWS for the corruption's generator: no view's seed reaches it


@dataclass
class ImageExamples:
    """Labeled images kept as uint8 (N, H, W, C) (a memory-mapped array works: only a batch's rows are read),
    turned into normalised float (B, C, H, W) ``pixels`` per batch, augmented first when ``augment`` is set and
    the batch comes with a seed (training batches; evaluation batches have none).

    Self-supervised objectives ask for more. ``views=V`` (SimCLR, BYOL: 2) replaces ``pixels`` with ``views``
    (V, B, C, H, W): V augmentations of each image, view v drawn from its own seed (``seed * MAX_VIEWS + v``), so
    the views differ from each other and from step to step, yet the same batch seed gives the same views (a
    resumed run sees what the uninterrupted one saw). ``corruption`` ((batch, torch.Generator) -> batch, e.g.
    MAE's patch masking) runs on a seeded batch last, with a generator of its own derived from the seed
    (``seed * MAX_VIEWS + CORRUPTION_STREAM``)."""

    images: np.ndarray
    labels: np.ndarray | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Callable | None = None  # (uint8 (B, C, H, W), seed) -> uint8 (B, C, H, W)
    views: int = 0  # 0: one batch of `pixels`; V >= 1: `views` (V, B, C, H, W)
    corruption: Callable | None = None  # (batch dict, torch.Generator) -> batch dict

    def __post_init__(self):
        if not 0 <= self.views <= MAX_VIEWS:
            raise ValueError(f"views={self.views}: between 0 (plain pixels) and {MAX_VIEWS}.")

    def __len__(self) -> int:
        return len(self.images)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def collate(self, idx, seed: int | None = None) -> dict:
        idx = np.asarray(idx, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx])).permute(0, 3, 1, 2)  # (B, C, H, W) uint8
        augment = self.augment if seed is not None else None
        if self.views:
            views = [augment(x, seed * MAX_VIEWS + v) if augment is not None else x for v in range(self.views)]
            batch = {"views": self._normalise(torch.stack(views).flatten(0, 1)).unflatten(0, (self.views, len(idx)))}
        else:
            batch = {"pixels": self._normalise(augment(x, seed) if augment is not None else x)}
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[idx])
        if self.corruption is not None and seed is not None:
            batch = self.corruption(batch, torch.Generator().manual_seed(seed * MAX_VIEWS + CORRUPTION_STREAM))
        return batch

    def subset(self, idx) -> "ImageExamples":
        idx = np.asarray(list(idx), dtype=np.int64)
        return ImageExamples(self.images[idx], None if self.labels is None else self.labels[idx], self.mean,
                             self.std, self.augment, self.views, self.corruption)


def normalise_frames(clips: list[np.ndarray], mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel clips ((T_i, n_mels) each) normalised per mel bin and right-padded with zeros to one length (a
    multiple of ``LENGTH_MULTIPLE``): (frames (B, T, n_mels) float32, attention (B, T) int64, 1 = a real frame)."""
    T = padded_length(max(len(c) for c in clips))
    frames = np.zeros((len(clips), T, clips[0].shape[1]), dtype=np.float32)
    attention = np.zeros((len(clips), T), dtype=np.int64)
    mean = np.asarray(mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    for row, clip in enumerate(clips):
        frames[row, :len(clip)] = (clip.astype(np.float32) - mean) * inv_std
        attention[row, :len(clip)] = 1
    return torch.from_numpy(frames), torch.from_numpy(attention)


@dataclass
class AudioExamples:
    """Labeled clips of an ``AudioSet`` (log-mel frames, possibly memory-mapped: only a batch's clips are read),
    normalised and padded per batch. A clip longer than ``max_frames`` is cropped: at a seeded random offset in a
    training batch (one with a seed), around its centre otherwise."""

    data: object  # an AudioSet
    labels: np.ndarray | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_frames: int = 3000

    def __len__(self) -> int:
        return len(self.data)

    def collate(self, idx, seed: int | None = None) -> dict:
        idx = np.asarray(idx, dtype=np.int64)
        rng = np.random.default_rng(seed) if seed is not None else None
        clips = []
        for i in idx:
            clip = self.data.clip(int(i))
            extra = len(clip) - self.max_frames
            if extra > 0:
                start = int(rng.integers(0, extra + 1)) if rng is not None else extra // 2
                clip = clip[start:start + self.max_frames]
            clips.append(clip)
        frames, attention = normalise_frames(clips, self.mean, self.std)
        batch = {"frames": frames, "attention": attention}
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[idx])
        return batch

    def subset(self, idx) -> "AudioExamples":
        idx = np.asarray(list(idx), dtype=np.int64)
        return AudioExamples(self.data.subset(idx), None if self.labels is None else self.labels[idx], self.mean,
                             self.std, self.max_frames)


@dataclass
class FrameCrops(_Stream):
    """Pretraining batches of audio: clips from the stream, a random crop of ``crop`` frames from each (a shorter
    clip is kept whole and padded), normalised, then the objective's corruption."""

    data: object  # an AudioSet
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: int
    corruption: Callable[[dict, torch.Generator], dict]

    def __post_init__(self):
        self._stream(len(self.data))

    def batch(self, step: int) -> dict:
        g = step_generator(self.seed, step)
        ids = self._ids(step)
        room = np.maximum(self.data.lengths[ids] - self.crop, 0) + 1  # possible start frames per clip
        starts = (torch.rand(len(ids), generator=g, dtype=torch.float64).numpy() * room).astype(np.int64)
        clips = [self.data.clip(i)[s:s + self.crop] for i, s in zip(ids, starts)]
        frames, attention = normalise_frames(clips, self.mean, self.std)
        return self._this_rank(self.corruption({"frames": frames, "attention": attention}, g))


@dataclass
class ExampleBatches:
    """Fine-tuning batches: a fresh seeded permutation every epoch; the last partial batch is kept. Each batch gets
    a seed of its own (from the run's seed and the step) for augmentation, so a resumed run sees the same views."""

    examples: EncodedExamples | ImageExamples | AudioExamples
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.examples) // self.batch_size))

    def batch(self, step: int) -> dict:
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
        if self.world_size > 1:
            if len(idx) < self.world_size:  # a tiny last batch: repeat examples so no rank is empty (as
                idx = np.concatenate([idx, perm[:self.world_size - len(idx)]])  # DistributedSampler does)
            idx = idx[self.rank::self.world_size]
        return self.examples.collate(idx, seed=(self.seed * 1_000_003 + step) % 2**31)


def in_order(examples: EncodedExamples | ImageExamples | AudioExamples, batch_size: int) -> Iterator[dict]:
    """Evaluation batches in file order."""
    for start in range(0, len(examples), batch_size):
        yield examples.collate(range(start, min(start + batch_size, len(examples))))
