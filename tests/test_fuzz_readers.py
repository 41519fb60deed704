"""Bad input, nothing lost: every defect of a labeled file or corpus is a file:line message with the rule it broke,
and every reader, fed arbitrary bytes, gives a clean result or a UserError: never another exception, never a hang."""

from __future__ import annotations

import contextlib
import gzip
import json
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.data.labeled import read_labeled
from transferlab.data.text import iter_paragraphs
from transferlab.errors import UserError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def no_hang(seconds: float = 10.0):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def alarm(*_):
        raise AssertionError(f"reader did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------- labeled files: each defect

CASES = [  # (name, file name, bytes, read_labeled kwargs, line, the rule in the message)
    ("wrong field count", "f.tsv", b"sentence\tlabel\na b\t1\nc d\t1\textra\n", {}, 3,
     "expected 2 tab-separated field(s) but found 3"),
    ("missing cell", "f.csv", b"sentence,label\n\"a, b\",1\nc d\n", {}, 3,
     "expected 2 comma-separated field(s) but found 1"),
    ("unbalanced csv quote", "f.csv", b"sentence,label\nok,1\n\"a b,1\nc d,0\n", {}, 3,
     "in a record spanning lines 3-4 (an unbalanced '\"'"),
    ("undecodable bytes", "f.tsv", b"sentence\tlabel\na b\t1\nc \xff d\t0\n", {}, 3,
     "line 3 is not valid UTF-8 (byte 0xff at column 3)"),
    ("empty text", "f.tsv", b"sentence\tlabel\n  \t1\nc d\t0\n", {}, 2, "empty text in column 'sentence'"),
    ("label outside the label set", "f.tsv", b"sentence\tlabel\na b\t1\nc d\t2\n", {"label_names": ["0", "1"]}, 3,
     "label '2' is not in the label set ['0', '1']"),
    ("NaN regression target", "f.tsv", b"sentence\tscore\na b\t0.5\nc d\tnan\n", {"task": "regression"}, 3,
     "regression target 'nan' is not finite"),
    ("duplicated id", "f.tsv", b"idx\tsentence\tlabel\n7\ta b\t1\n8\tc d\t0\n7\te f\t1\n", {}, 4,
     "duplicated id '7' in column 'idx' (first used on line 2)"),
    ("duplicated id (jsonl)", "f.jsonl", b'{"id": 1, "text": "a", "label": 0}\n{"id": 1, "text": "b", "label": 1}\n',
     {}, 2, "duplicated id '1' in column 'id'"),
    ("jsonl not an object", "f.jsonl", b'{"text": "a", "label": 0}\n[1, 2]\n', {}, 2, "expected a JSON object"),
]


@pytest.mark.parametrize("name,filename,content,kwargs,line,rule", CASES, ids=[c[0] for c in CASES])
def test_each_defect_names_file_line_and_rule(tmp_path, name, filename, content, kwargs, line, rule):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_labeled(path, **kwargs)
    assert f"{path}:{line}: " in str(e.value) and rule in str(e.value) and "--skip-bad-rows" in str(e.value)
    skipped = read_labeled(path, skip_bad_rows=True, **kwargs)
    assert [l for l, _ in skipped.skipped] == [line] and rule in skipped.skipped[0][1]
    assert f"skipped 1 bad row(s) (line {line}: " in skipped.skipped_summary()


def test_tsv_stray_quotes_never_merge_rows(tmp_path):
    path = tmp_path / "sst.tsv"
    path.write_bytes(b'sentence\tlabel\n"a quote that never closes\t1\nthe next row\t0\nit \'s "fine" \t1\n')
    ds = read_labeled(path)
    assert ds.texts_a == ['"a quote that never closes', "the next row", 'it \'s "fine"'] and ds.lines == [2, 3, 4]


def test_bom_and_header_or_no_header(tmp_path):
    path = tmp_path / "f.tsv"
    path.write_bytes(b"\xef\xbb\xbfsentence\tlabel\na b\t1\n")
    assert read_labeled(path).texts_a == ["a b"]  # the BOM is not part of the first column name
    path.write_bytes(b"a b\t1\nc d\t0\n")
    with pytest.raises(UserError, match="cannot tell which column"):
        read_labeled(path)  # header=True on a file without one: its first row is taken as names, none fit
    ds = read_labeled(path, header=False, text_cols=["0"], label_col="1")
    assert ds.texts_a == ["a b", "c d"] and ds.lines == [1, 2]


def test_skip_bad_rows_counts_every_reason(tmp_path, capsys):
    path = tmp_path / "mixed.tsv"
    path.write_bytes(b"idx\tsentence\tlabel\n1\tgood one\t0\n2\t\t1\n3\tbad \xfe\t1\n4\tthree\tcells\textra\n"
                     b"1\tdup id\t0\n5\tgood two\t1\n")
    ds = read_labeled(path, skip_bad_rows=True)
    assert ds.texts_a == ["good one", "good two"]
    assert [(l, r.split(" ")[0]) for l, r in ds.skipped] == [(3, "empty"), (4, "line"), (5, "expected"),
                                                            (6, "duplicated")]
    assert ds.skipped_summary().startswith(f"{path}: skipped 4 bad row(s) (line 3: empty text")


_line = st.one_of(
    st.sampled_from(["a b\t0", "c d\t1", "e\t2", "\t1", "x\t", "a\tb\tc", '"q\t1', "7\tdup\t0", "nan\tnan"]),
    st.text(alphabet=list("ab \t\"',01\\é\ufeff\x00"), max_size=10))


@FUZZ
@given(header=st.sampled_from(["sentence\tlabel", "idx\tsentence\tlabel", "sentence"]), rows=st.lists(_line, max_size=8),
       crlf=st.booleans(), junk=st.one_of(st.none(), st.integers(0, 200)))
def test_tsv_nothing_lost_property(tmp_path, header, rows, crlf, junk):
    """With --skip-bad-rows every non-blank data line is either read or listed as skipped, exactly once."""
    data = ("\r\n" if crlf else "\n").join([header, *rows]).encode("utf-8")
    if junk is not None and data:
        pos = junk % len(data)
        data = data[:pos] + b"\xff" + data[pos + 1:]
    path = tmp_path / "f.tsv"
    path.write_bytes(data)
    try:
        with no_hang():
            ds = read_labeled(path, skip_bad_rows=True)
    except UserError as e:
        assert str(e).strip()
        return
    physical = data.replace(b"\r\n", b"\n").split(b"\n")
    nonblank = {i + 1 for i, l in enumerate(physical) if l.strip(b" \t\r") and i > 0}
    kept, skipped = set(ds.lines), {l for l, _ in ds.skipped}
    assert not kept & skipped and kept | skipped == nonblank
    assert all(reason for _, reason in ds.skipped)


@FUZZ
@given(ext=st.sampled_from(["tsv", "csv", "jsonl"]), data=st.binary(max_size=300), skip=st.booleans(),
       header=st.booleans())
def test_labeled_reader_on_arbitrary_bytes(tmp_path, ext, data, skip, header):
    path = tmp_path / f"f.{ext}"
    path.write_bytes(data)
    cols = {} if header else {"text_cols": ["0"], "label_col": "1"}
    try:
        with no_hang():
            ds = read_labeled(path, skip_bad_rows=skip, header=header, **cols)
    except UserError:
        return
    assert len(ds) == len(ds.lines) > 0


# ------------------------------------------------------------------------------------------------------- corpora

def _prepare(tmp_path, tokenizer, *files):
    from transferlab.data.corpus import prepare_corpus

    return prepare_corpus(files, tokenizer, tmp_path / "out", progress=False)


def test_empty_corpus_file(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n\n  \n")
    with pytest.raises(UserError, match="holds no text"):
        _prepare(tmp_path, tokenizer, tmp_path / "empty.txt", tmp_path / "blank.txt")
    assert not (tmp_path / "out").exists()


def test_binary_corpus_file_names_the_line(tmp_path, tokenizer):
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with pytest.raises(UserError, match=rf"{path}:1: not valid UTF-8 \(byte 0x89 at column 1\).*iconv"):
        _prepare(tmp_path, tokenizer, path)
    assert not (tmp_path / "out").exists()


def test_mixed_encodings_name_the_bad_line(tmp_path, tokenizer):
    path = tmp_path / "mixed.txt"
    path.write_bytes("caf\u00e9 is utf-8\nthe cat sat\n".encode() + "na\u00efve latin-1\n".encode("latin-1"))
    with pytest.raises(UserError, match=rf"{path}:3: not valid UTF-8 \(byte 0xef at column 3\)"):
        _prepare(tmp_path, tokenizer, path)


def test_one_enormous_line_is_read_whole(tmp_path, tokenizer):
    path = tmp_path / "one_line.txt"
    words = ("the cat sat on the mat " * 40_000).strip()  # ~0.9 MB, no newline at all
    path.write_text(words, encoding="utf-8")
    from transferlab.data.blocks import TokenCorpus

    corpus = TokenCorpus(_prepare(tmp_path, tokenizer, path))
    total = sum(corpus.num_tokens(s) for s in corpus.splits)
    assert total == len(tokenizer.encode(words)) + corpus.meta["splits"]["train"]["documents"] + \
        corpus.meta["splits"]["heldout"]["documents"]  # every token, plus one EOS per piece


@FUZZ
@given(name=st.sampled_from(["c.txt", "c.jsonl", "c.txt.gz", "c.jsonl.gz"]), data=st.binary(max_size=400),
       gzip_it=st.booleans())
def test_corpus_reader_on_arbitrary_bytes(tmp_path, name, data, gzip_it):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gzip_it and name.endswith(".gz") else data)
    try:
        with no_hang():
            out = list(iter_paragraphs(path))
    except UserError as e:
        assert str(path) in str(e)
        return
    assert all(p is None or (isinstance(p, str) and p.strip()) for p in out)


@FUZZ
@given(lines=st.lists(st.one_of(st.text(max_size=20), st.sampled_from(['{"text": "a b"}', '{"text": 3}', "[]",
                                                                        '{"text": "x\\n\\ny"}', "{"])), max_size=6))
def test_jsonl_corpus_lines(tmp_path, lines):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        with no_hang():
            out = list(iter_paragraphs(path))
    except UserError as e:
        assert f"{path}:" in str(e)
        return
    assert all(p is None or p.strip() for p in out)


# ------------------------------------------------------------------------------- checkpoint and tokenizer files

@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.sampled_from([b"[]", b"null", b'"x"', b"{}", b'{"format": 1}',
                                                              b'{"format": "transferlab/1"}', b"[" * 5000])))
def test_checkpoint_config_reader(tmp_path, data):
    from transferlab.training.checkpoint import load_config

    (tmp_path / "config.json").write_bytes(data)
    (tmp_path / "model.safetensors").write_bytes(b"")
    try:
        with no_hang():
            load_config(tmp_path)
    except UserError:
        pass


@FUZZ
@given(marker=st.one_of(st.binary(max_size=100), st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
    st.sampled_from(["format", "files"]), st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                    st.dictionaries(st.text(max_size=8), st.integers()))))))
def test_completeness_marker_reader(tmp_path, marker):
    from transferlab.training.checkpoint import MARKER, check_complete

    (tmp_path / MARKER).write_bytes(marker)
    with no_hang():
        reason = check_complete(tmp_path)
    assert reason is None or isinstance(reason, str)


@FUZZ
@given(data=st.binary(max_size=200), truncate=st.integers(0, 2000))
def test_tokenizer_reader(tmp_path, tokenizer, data, truncate):
    from transferlab.tokenization import Tokenizer

    valid = tokenizer.hf.to_str().encode()
    for content in (data, valid[:truncate]):
        (tmp_path / "tokenizer.json").write_bytes(content)
        try:
            with no_hang():
                Tokenizer.load(tmp_path)
        except UserError as e:
            assert "tokenizer" in str(e)
