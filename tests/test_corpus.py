"""Reading text corpora, preparing token files, packed blocks and the block sampler — tiny corpora, seconds."""

import gzip
import json
import pickle

import numpy as np
import pytest
import torch

from transferlab.data.blocks import InfiniteBlockSampler, PackedBlocks, TokenCorpus
from transferlab.data.corpus import prepare_corpus
from transferlab.data.text import expand_inputs, iter_documents, iter_paragraphs
from transferlab.errors import UserError
from transferlab.tokenization import Tokenizer

WORDS = "the a fox dog runs sleeps jumps over under quick lazy brown red green house tree river stone".split()


def make_text(rng, n_paragraphs, words=(4, 12)):
    return [" ".join(rng.choice(WORDS, size=rng.integers(*words))) + "." for _ in range(n_paragraphs)]


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    return Tokenizer.train_from_texts(make_text(rng, 200), kind="wordpiece", vocab_size=120)


@pytest.fixture()
def corpus_files(tmp_path):
    """Two files, 12 documents in all, of varied length."""
    rng = np.random.default_rng(1)
    docs = [make_text(rng, int(rng.integers(1, 30))) for _ in range(12)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("\n\n\n".join("\n\n".join(d) for d in docs[:7]) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "src" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs[7:]:
            f.write(json.dumps({"text": "\n".join(d), "id": 3}) + "\n")
    return tmp_path / "src", docs


# ---------------------------------------------------------------------------------------------- text reading
def test_txt_documents_split_on_two_blank_lines(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text("Title A\nPara 1.\n\nPara 2.\n\n\nTitle B\nPara 3.\n\n\n\n\nTitle C\n", encoding="utf-8")
    assert list(iter_documents(path)) == [["Title A", "Para 1.", "Para 2."], ["Title B", "Para 3."], ["Title C"]]


def test_book_with_single_blank_lines_is_one_document(tmp_path):
    path = tmp_path / "book.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n\nChapter 1\n\nIt was night.\n\nThe end.")  # leading blanks, no final newline
    assert list(iter_documents(path)) == [["Chapter 1", "It was night.", "The end."]]


def test_bom_crlf_and_empty_files(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst line\r\nsecond\r\n")
    assert list(iter_documents(path)) == [["First line", "second"]]
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    assert list(iter_documents(tmp_path / "empty.txt")) == []
    assert list(iter_documents(tmp_path / "blank.jsonl")) == []


def test_jsonl_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "p1\\n\\np2"}\n\n{"text": "only"}\n{"text": ""}\n', encoding="utf-8")
    assert list(iter_documents(path)) == [["p1", "p2"], ["only"]]
    assert list(iter_paragraphs(path)) == ["p1", "p2", None, "only", None]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": broken}\n', r"d\.jsonl:2: not valid JSON"),
        (b'{"text": "ok"}\n\n{"body": "x"}\n', r"d\.jsonl:3: .*no \"text\" field"),
        (b'{"text": 5}\n', r"d\.jsonl:1: \"text\" is a int"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"d\.jsonl:2: not valid UTF-8"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        list(iter_documents(path))


def test_bad_utf8_in_gz_names_line(tmp_path):
    path = tmp_path / "x.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"fine\n\nalso fine\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"x\.txt\.gz:4: not valid UTF-8"):
        list(iter_documents(path))


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t.txt.gz"
    data = gzip.compress(("line of text\n" * 2000).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        list(iter_documents(path))


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.txt", "d/sub/a.jsonl.gz", "d/notes.md", "d/.hidden.txt", "c.txt"]:
        (tmp_path / name).write_text("x")
    files = expand_inputs([tmp_path / "c.txt", tmp_path / "d", tmp_path / "d" / "b.txt"])
    assert files == [tmp_path / "c.txt", tmp_path / "d" / "b.txt", tmp_path / "d" / "sub" / "a.jsonl.gz"]
    with pytest.raises(UserError, match="missing.txt.*does not exist"):
        expand_inputs([tmp_path / "missing.txt"])
    with pytest.raises(UserError, match=r"notes\.md.*unsupported.*\.jsonl\.gz"):
        expand_inputs([tmp_path / "d" / "notes.md"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no text files"):
        expand_inputs([tmp_path / "empty"])


# ------------------------------------------------------------------------------------------- prepare_corpus
def _prepare(src, tokenizer, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("segment_tokens", 64)
    kw.setdefault("heldout_fraction", 0.1)
    return prepare_corpus([src], tokenizer, out, **kw)


def test_prepare_writes_consistent_files(tmp_path, corpus_files, tokenizer):
    src, docs = corpus_files
    out = _prepare(src, tokenizer, tmp_path / "corpus")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == 1 and meta["dtype"] == "uint16" and meta["eos_id"] == tokenizer.eos_id
    assert meta["tokenizer_sha256"] == tokenizer.sha256
    assert [s["documents"] for s in meta["sources"]] == [7, 5]
    assert Tokenizer.load(out).sha256 == tokenizer.sha256
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["meta.json", "tokenizer.json", "train.bin", "train.idx.npy", "heldout.bin", "heldout.idx.npy"]
    )

    corpus = TokenCorpus(out)
    total_text_tokens = sum(len(ids) for d in docs for ids in tokenizer.encode_batch(d))
    streams = {}
    for split in ("train", "heldout"):
        tokens = np.asarray(corpus.tokens(split))
        starts = corpus.document_starts(split)
        info = meta["splits"][split]
        assert len(tokens) == info["tokens"] > 0 and len(starts) == info["documents"] > 0
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        # Every piece is contiguous text that ends with EOS, and EOS appears nowhere else.
        ends = np.append(starts[1:], len(tokens)) - 1
        assert np.all(tokens[ends] == tokenizer.eos_id)
        assert np.count_nonzero(tokens == tokenizer.eos_id) == len(starts)
        streams[split] = tokens
    n_pieces = meta["splits"]["train"]["documents"] + meta["splits"]["heldout"]["documents"]
    assert len(streams["train"]) + len(streams["heldout"]) == total_text_tokens + n_pieces


def test_without_heldout_cuts_the_stream_is_the_documents(tmp_path, corpus_files, tokenizer):
    # With one segment per document, train + heldout pieces are exactly the documents, each + EOS.
    src, docs = corpus_files
    corpus = TokenCorpus(_prepare(src, tokenizer, tmp_path / "c", segment_tokens=10_000, heldout_fraction=0.3))
    expected = {tuple(np.concatenate([np.concatenate(tokenizer.encode_batch(d)), [6]]).tolist()) for d in docs}
    got = set()
    for split in ("train", "heldout"):
        tokens = np.asarray(corpus.tokens(split)).tolist()
        bounds = list(corpus.document_starts(split)) + [len(tokens)]
        got |= {tuple(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:])}
    assert got == expected


@pytest.mark.parametrize("segment_tokens", [1, 5, 16])
def test_long_paragraphs_are_cut_and_nothing_is_lost(tmp_path, tokenizer, segment_tokens):
    long = " ".join(WORDS * 6) + "."
    (tmp_path / "long.txt").write_text(f"{long}\nshort one.\n\n\n{long}\n", encoding="utf-8")
    corpus = TokenCorpus(_prepare(tmp_path / "long.txt", tokenizer, tmp_path / "c", segment_tokens=segment_tokens,
                                  heldout_fraction=0.3))
    text_tokens = tokenizer.encode_batch([long, "short one.", long])
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for split in ("train", "heldout"):
        counts += np.bincount(np.asarray(corpus.tokens(split)), minlength=tokenizer.vocab_size)
    expected = np.bincount(np.concatenate(text_tokens), minlength=tokenizer.vocab_size)
    n_pieces = len(corpus.document_starts("train")) + len(corpus.document_starts("heldout"))
    expected[tokenizer.eos_id] += n_pieces
    assert np.array_equal(counts, expected)
    assert corpus.num_tokens("heldout") > 0


def test_heldout_deterministic_and_seeded(tmp_path, corpus_files, tokenizer):
    src, _ = corpus_files
    a = _prepare(src, tokenizer, tmp_path / "a", seed=3)
    b = _prepare(src, tokenizer, tmp_path / "b", seed=3)
    c = _prepare(src, tokenizer, tmp_path / "c", seed=4)
    for name in ("train.bin", "heldout.bin", "train.idx.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "heldout.bin").read_bytes() != (c / "heldout.bin").read_bytes()


def test_heldout_never_empty(tmp_path, tokenizer):
    (tmp_path / "two.txt").write_text("the fox runs.\n\n\nthe dog sleeps.\n")
    corpus = TokenCorpus(_prepare(tmp_path / "two.txt", tokenizer, tmp_path / "c", heldout_fraction=1e-9))
    assert corpus.num_tokens("heldout") > 0 and corpus.num_tokens("train") > 0
    corpus = TokenCorpus(_prepare(tmp_path / "two.txt", tokenizer, tmp_path / "d", heldout_fraction=0.999999))
    assert corpus.num_tokens("heldout") > 0 and corpus.num_tokens("train") > 0


def test_existing_out_dir_refused_without_overwrite(tmp_path, corpus_files, tokenizer):
    src, _ = corpus_files
    out = _prepare(src, tokenizer, tmp_path / "c")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        _prepare(src, tokenizer, out)
    _prepare(src, tokenizer, out, overwrite=True, seed=9)
    assert json.loads((out / "meta.json").read_text())["seed"] == 9


def test_failure_leaves_no_directory(tmp_path, tokenizer):
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(UserError, match="no text"):
        _prepare(tmp_path / "blank.txt", tokenizer, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt"]


def test_bad_options(tmp_path, corpus_files, tokenizer):
    src, _ = corpus_files
    with pytest.raises(UserError, match="--heldout-fraction"):
        _prepare(src, tokenizer, tmp_path / "c", heldout_fraction=0.0)


# ----------------------------------------------------------------------------------------- corpus + blocks
@pytest.fixture()
def corpus(tmp_path, corpus_files, tokenizer):
    return TokenCorpus(_prepare(corpus_files[0], tokenizer, tmp_path / "corpus"))


def test_token_corpus_errors(tmp_path, corpus, tokenizer):
    with pytest.raises(UserError, match="corpus prepare"):
        TokenCorpus(tmp_path / "nowhere")
    with pytest.raises(UserError, match="Known splits: train, heldout"):
        corpus.tokens("validation")
    corpus.check_tokenizer(tokenizer)
    other = Tokenizer.train_from_texts(["a different text entirely."] * 3, kind="bpe", vocab_size=300)
    with pytest.raises(UserError, match="corpus prepare"):
        corpus.check_tokenizer(other)


def test_packed_blocks_match_stream(corpus):
    blocks = PackedBlocks(corpus, "train", block_len=16)
    tokens = np.asarray(corpus.tokens("train"))
    assert len(blocks) == len(tokens) // 16
    for i in (0, 1, len(blocks) - 1):
        block = blocks[i]
        assert block.dtype == torch.int64 and block.shape == (16,)
        assert block.tolist() == tokens[i * 16 : (i + 1) * 16].tolist()
    batch = blocks.get_batch([3, 0, len(blocks) - 1])
    assert batch.shape == (3, 16) and batch.dtype == torch.int64
    assert torch.equal(batch, torch.stack([blocks[3], blocks[0], blocks[len(blocks) - 1]]))
    with pytest.raises(IndexError):
        blocks.get_batch([len(blocks)])


def test_packed_blocks_too_short(corpus):
    n = corpus.num_tokens("heldout")
    with pytest.raises(UserError, match=f"has {n} tokens, fewer than one block.*--seq-len"):
        PackedBlocks(corpus.directory, "heldout", block_len=n + 1)


def test_pickled_dataset_does_not_carry_tokens(corpus):
    blocks = PackedBlocks(corpus, block_len=8)
    blocks[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(blocks))
    assert len(pickle.dumps(blocks)) < 4096
    assert torch.equal(clone[5], blocks[5])


# ------------------------------------------------------------------------------------------------- sampler
def take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_sampler_deterministic_and_epochs_are_permutations():
    n = 11
    stream = take(InfiniteBlockSampler(n, seed=5), 3 * n)
    assert stream == take(InfiniteBlockSampler(n, seed=5), 3 * n)
    assert stream != take(InfiniteBlockSampler(n, seed=6), 3 * n)
    for e in range(3):
        assert sorted(stream[e * n : (e + 1) * n]) == list(range(n))
    assert stream[:n] != stream[n : 2 * n]


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_cover_each_block_once_per_epoch(world_size):
    n = 12  # divisible by 2, 3, 4 so every rank gets whole epochs' shares
    per_rank = [
        take(InfiniteBlockSampler(n, seed=1, rank=r, world_size=world_size), n // world_size) for r in range(world_size)
    ]
    assert sorted(sum(per_rank, [])) == list(range(n))
    # Interleaving the ranks gives back the single-process stream.
    single = take(InfiniteBlockSampler(n, seed=1), n)
    assert [per_rank[p % world_size][p // world_size] for p in range(n)] == single


def test_resume_from_start_continues_exactly():
    full = take(InfiniteBlockSampler(7, seed=2), 40)
    assert take(InfiniteBlockSampler(7, seed=2, start=17), 23) == full[17:]


def test_resume_with_different_world_size():
    n, seed = 9, 3
    global_stream = take(InfiniteBlockSampler(n, seed=seed), 60)
    # Phase 1: 2 ranks consume 10 steps each (20 global samples); phase 2: 3 ranks resume at start=20.
    phase1 = [take(InfiniteBlockSampler(n, seed=seed, rank=r, world_size=2), 10) for r in range(2)]
    phase2 = [take(InfiniteBlockSampler(n, seed=seed, rank=r, world_size=3, start=20), 10) for r in range(3)]
    consumed = [phase1[p % 2][p // 2] for p in range(20)] + [phase2[p % 3][p // 3] for p in range(30)]
    assert consumed == global_stream[:50]


def test_sampler_with_dataloader(corpus):
    blocks = PackedBlocks(corpus, block_len=8)
    loader = torch.utils.data.DataLoader(blocks, batch_size=4, sampler=InfiniteBlockSampler(len(blocks), seed=0))
    batch = next(iter(loader))
    assert batch.shape == (4, 8)
    first = take(InfiniteBlockSampler(len(blocks), seed=0), 4)
    assert torch.equal(batch, blocks.get_batch(first))


def test_rank_slices_of_pretraining_batches_add_up_to_the_single_process_batch(tmp_path):
    """Data parallelism must not change the data: rank slices (masks included) re-interleave to one batch."""
    import torch

    from transferlab.data.batches import BlockBatches
    from transferlab.objectives import MLMCorruption
    from transferlab.tokenization import Tokenizer

    text = tmp_path / "c.txt"
    text.write_text("\n\n\n".join(" ".join(f"w{i % 37} v{i % 11}" for i in range(d, d + 60)) for d in range(40)))
    tok = Tokenizer.train([text], kind="wordpiece", vocab_size=100, progress=False)
    from transferlab.data.blocks import PackedBlocks
    from transferlab.data.corpus import prepare_corpus

    blocks = PackedBlocks(prepare_corpus([text], tok, tmp_path / "corpus", progress=False), "train", 15)
    corruption = MLMCorruption(tok.vocab_size, tok.mask_id, tok.cls_id)
    single = BlockBatches(blocks, corruption, global_batch=8, seed=3).batch(5)
    ranks = [BlockBatches(blocks, corruption, global_batch=8, seed=3, rank=r, world_size=2).batch(5) for r in range(2)]
    for key in single:
        merged = torch.empty_like(single[key])
        merged[0::2], merged[1::2] = ranks[0][key], ranks[1][key]
        assert torch.equal(merged, single[key])
