"""Shared fixtures: a tiny tokenizer and corpus made on the fly, and the path to ../shared/data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

WORDS = ("the a cat dog bird sat ran flew on under over mat tree sky house big small red blue green quickly "
         "slowly and then it was very happy sad").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + " ." for _ in range(n)]


def bars(n: int, seed: int, rgb: bool = False, noise: int = 60):
    """A learnable 2-class image task: a bright horizontal (0) or vertical (1) bar at a random place, on noise
    below ``noise``. Returns (images (n, 28, 28) uint8, or (n, 28, 28, 3) with ``rgb``; labels (n,))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, noise, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = rng.integers(4, 20, 2)
        if y[i] == 0:
            x[i, a:a + 3, b:b + 8] = 230
        else:
            x[i, a:a + 8, b:b + 3] = 230
    if rgb:
        x = np.repeat(x[..., None], 3, axis=-1)
    return x, y


def bars_npz(path: Path, sizes: tuple[int, int, int]) -> Path:
    """``bars`` written as a MedMNIST-style .npz at ``path``: train/val/test images and (n, 1) labels of the
    given sizes (seeds 0, 1, 2). Returns the path."""
    import numpy as np

    arrays = {}
    for seed, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        x, y = bars(n, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


# transformers (a test dependency) imports torchvision when it is installed; see transferlab.compat.
from transferlab.compat import import_torchvision  # noqa: E402

import_torchvision()


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def corpus_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    lines = sentences(3000)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(0, len(lines), 30):
            f.write("\n".join(lines[i:i + 30]) + "\n\n\n")
    return path


@pytest.fixture(scope="session")
def tokenizer(corpus_text):
    from transferlab.tokenization import Tokenizer

    return Tokenizer.train([corpus_text], kind="wordpiece", vocab_size=120, progress=False)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, corpus_text, tokenizer) -> Path:
    from transferlab.data.corpus import prepare_corpus

    return prepare_corpus([corpus_text], tokenizer, tmp_path_factory.mktemp("corpus") / "c", heldout_fraction=0.05,
                          progress=False, segment_tokens=256)


@pytest.fixture(scope="session")
def labeled_files(tmp_path_factory) -> tuple[Path, Path]:
    """A learnable single-sentence task: label 1 iff the sentence mentions an animal."""
    d = tmp_path_factory.mktemp("labeled")
    animals = {"cat", "dog", "bird"}
    for name, seed, n in (("train.tsv", 1, 160), ("dev.tsv", 2, 60)):
        with open(d / name, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for s in sentences(n, seed):
                f.write(f"{s}\t{'pos' if animals & set(s.split()) else 'neg'}\n")
    return d / "train.tsv", d / "dev.tsv"


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory, corpus_dir) -> Path:
    """A tiny MLM run with BERT's LM head (so transfer has a head to drop), pretrained for a few steps: RUN/final."""
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("runs") / "mlm"
    return pretrain(PretrainConfig(corpus=str(corpus_dir), out=str(out), model="tiny", seq_len=32, batch_size=8,
                                   steps=6, progress=False, eval_batches=2, lm_head="bert"))


def _gloo_rank(rank: int, world_size: int, port: int, fn, args) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def on_gloo_ranks(fn, *args, world_size: int = 2) -> None:
    """Run ``fn(*args)`` (a module-level function) in ``world_size`` fresh processes joined by gloo, as torchrun
    would start them, on a free local port."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_rank, args=(world_size, port, fn, args), nprocs=world_size)
