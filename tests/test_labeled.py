"""Labeled-file reader: the real GLUE files, every user error with file:line, and a fuzz property."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.data.labeled import LabeledSet, find_split, read_labeled
from transferlab.errors import UserError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


def glue(task: str) -> Path:
    d = DATA / task
    if not d.is_dir():
        pytest.skip(f"{d} is not available")
    return d


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content, encoding="utf-8", newline="")
    else:
        p.write_bytes(content)
    return p


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.data
def test_sst2_train():
    ds = read_labeled(find_split(glue("sst2"), "train"))
    assert len(ds) == 67_349 and ds.texts_b is None
    assert ds.task == "classification" and ds.label_names == ["0", "1"] and ds.num_labels == 2
    assert Counter(ds.labels) == {1: 37_569, 0: 29_780}
    assert ds.texts_a[0] == "hide new secretions from the parental units"  # trailing space stripped
    assert ds.lines[:2] == [2, 3] and ds.skipped == []


@pytest.mark.data
def test_mrpc_train_bom_and_bare_quotes():
    ds = read_labeled(find_split(glue("mrpc"), "train"))
    assert len(ds) == 3_668 and ds.texts_b is not None and len(ds.texts_b) == 3_668
    assert Counter(ds.labels) == {1: 2_474, 0: 1_194}
    assert ds.texts_a[0].startswith("Amrozi")  # the BOM did not hide the "Quality" header
    # A quote-aware reader would merge the rows around bare quotes; each row must stay one example.
    quoted = [i for i, t in enumerate(ds.texts_b) if t.startswith('"') or t.count('"') % 2]
    assert quoted, "MRPC should contain rows with bare quotes"
    assert all("\t" not in t and "\n" not in t for t in ds.texts_a + ds.texts_b)
    assert ds.lines == list(range(2, 3_670))


@pytest.mark.data
def test_stsb_is_regression():
    ds = read_labeled(find_split(glue("stsb"), "train"))
    assert len(ds) == 5_749 and ds.task == "regression" and ds.num_labels == 1 and ds.label_names is None
    assert ds.texts_b is not None and ds.labels[:2] == [5.0, 3.8]
    assert all(0.0 <= y <= 5.0 for y in ds.labels)


@pytest.mark.data
def test_qnli_dev_named_labels():
    ds = read_labeled(find_split(glue("qnli"), "validation"))  # "validation" falls back to dev.tsv
    assert len(ds) == 5_463 and ds.label_names == ["entailment", "not_entailment"]
    assert Counter(ds.labels) == {0: 2_702, 1: 2_761}
    assert ds.texts_a[0].startswith("What came into force")  # question first, then sentence
    fixed = read_labeled(find_split(glue("qnli"), "dev"), label_names=["not_entailment", "entailment"])
    assert Counter(fixed.labels) == {1: 2_702, 0: 2_761}


@pytest.mark.data
def test_find_split_errors_list_what_exists():
    with pytest.raises(UserError, match=r"no file for split 'test'.*dev.tsv.*train.tsv"):
        find_split(glue("sst2"), "test")
    assert find_split(glue("sst2") / "dev.tsv", "train") == glue("sst2") / "dev.tsv"


# ------------------------------------------------------------------------------------------------ formats


def test_tsv_crlf_bom_and_blank_lines(tmp_path):
    p = write(tmp_path, "a.tsv", b"\xef\xbb\xbfsentence\tlabel\r\ngood film \t1\r\n\r\nbad \"film\t0\r\n")
    ds = read_labeled(p)
    assert ds.texts_a == ["good film", 'bad "film'] and ds.labels == [1, 0] and ds.lines == [2, 4]
    assert ds.source == str(p)


def test_csv_with_quoted_commas_and_newlines(tmp_path):
    p = write(tmp_path, "a.csv", 'text,label\n"good, really good",pos\n"two\nlines",neg\nplain,pos\n')
    ds = read_labeled(p)
    assert ds.texts_a == ["good, really good", "two\nlines", "plain"]
    assert ds.label_names == ["neg", "pos"] and ds.labels == [1, 0, 1]
    assert ds.lines == [2, 3, 5]


def test_jsonl_pairs_and_numeric_labels(tmp_path):
    rows = [{"premise": "a cat", "hypothesis": "an animal", "label": 0},
            {"premise": "a dog", "hypothesis": "a cat", "label": 2, "extra": [1]},
            {"premise": "x", "hypothesis": "y", "label": 1}]
    p = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = read_labeled(p)
    assert ds.texts_a == ["a cat", "a dog", "x"] and ds.texts_b == ["an animal", "a cat", "y"]
    assert ds.labels == [0, 2, 1] and ds.label_names == ["0", "1", "2"]


def test_jsonl_float_labels_are_regression(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"text": "a", "score": 0.5}\n{"text": "b", "score": 4}\n')
    ds = read_labeled(p)
    assert ds.task == "regression" and ds.labels == [0.5, 4.0]


def test_header_false_with_index_columns(tmp_path):
    p = write(tmp_path, "a.tsv", "x1\tfirst text\t1\nx2\tsecond text\t0\n")
    ds = read_labeled(p, text_cols=["1"], label_col="2", header=False)
    assert ds.texts_a == ["first text", "second text"] and ds.labels == [1, 0] and ds.lines == [1, 2]
    with pytest.raises(UserError, match=r"no column '3'.*0-based.*'0', '1', '2'"):
        read_labeled(p, text_cols=["3"], label_col="2", header=False)


def test_text_cols_as_comma_string_and_integer_label_order(tmp_path):
    p = write(tmp_path, "a.tsv", "q\ts\ty\nA\tB\t10\nC\tD\t9\nE\tF\t010\n")
    ds = read_labeled(p, text_cols="q,s", label_col="y")
    assert ds.label_names == ["9", "10"] and ds.labels == [1, 0, 1]  # numeric order, "010" == "10"


def test_predict_file_without_labels(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\nhello\nworld\n")
    ds = read_labeled(p, require_labels=False, label_col="label", task="classification", label_names=["n", "p"])
    assert ds.labels is None and ds.texts_a == ["hello", "world"] and ds.num_labels == 2
    with pytest.raises(UserError, match="--label-col"):
        read_labeled(p)


def test_subset(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t0\n")
    sub = read_labeled(p).subset([2, 0])
    assert isinstance(sub, LabeledSet) and sub.texts_a == ["c", "a"] and sub.labels == [0, 0]
    assert sub.lines == [4, 2] and sub.label_names == ["0", "1"] and len(sub) == 2


# ------------------------------------------------------------------------------------------------ errors


def test_wrong_field_count_names_file_and_line(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\nok\t1\nstray\ttab\t0\nfine\t0\n")
    with pytest.raises(UserError) as e:
        read_labeled(p)
    assert f"{p}:3:" in str(e.value) and "expected 2" in str(e.value) and "found 3" in str(e.value)


def test_bad_utf8_line(tmp_path):
    p = write(tmp_path, "a.tsv", b"sentence\tlabel\nok\t1\nbad \xff\xfe byte\t0\n")
    with pytest.raises(UserError, match=rf"{p}:3: .*not valid UTF-8.*0xff"):
        read_labeled(p)


def test_missing_column_lists_available(tmp_path):
    p = write(tmp_path, "a.tsv", "review\tstars\ngreat\t5\n")
    with pytest.raises(UserError) as e:
        read_labeled(p)
    msg = str(e.value)
    assert str(p) in msg and "'review', 'stars'" in msg and "--text-cols" in msg
    with pytest.raises(UserError, match=r"no column 'body'.*'review', 'stars'.*--text-cols"):
        read_labeled(p, text_cols=["body"], label_col="stars")
    with pytest.raises(UserError, match=r"no column 'rating'.*--label-col"):
        read_labeled(p, text_cols=["review"], label_col="rating")


def test_label_outside_label_set(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\na\tpos\nb\tneutral\n")
    with pytest.raises(UserError, match=rf"{p}:3: label 'neutral' is not in the label set \['neg', 'pos'\]"):
        read_labeled(p, label_names=["neg", "pos"])


def test_nan_regression_target(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence1\tsentence2\tscore\na\tb\t1.5\nc\td\tnan\ne\tf\t2.0\n")
    with pytest.raises(UserError, match=rf"{p}:3: regression target 'nan' is not finite"):
        read_labeled(p)
    p2 = write(tmp_path, "b.tsv", "text\tscore\na\t1.5\nb\tabc\n")
    with pytest.raises(UserError, match=rf"{p2}:3: regression target 'abc'.*not a number"):
        read_labeled(p2, task="regression")


def test_empty_text_and_missing_label(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\n  \t1\n")
    with pytest.raises(UserError, match=rf"{p}:2: empty text in column 'sentence'"):
        read_labeled(p)
    p = write(tmp_path, "b.tsv", "sentence\tlabel\nfine\t1\nno label\t\n")
    with pytest.raises(UserError, match=rf"{p}:3: missing label in column 'label'"):
        read_labeled(p)


def test_missing_empty_and_headless_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_labeled(tmp_path / "nope.tsv")
    with pytest.raises(UserError, match="is empty"):
        read_labeled(write(tmp_path, "e.tsv", ""))
    with pytest.raises(UserError, match="no data rows"):
        read_labeled(write(tmp_path, "h.tsv", "sentence\tlabel\n"))
    with pytest.raises(UserError, match="unsupported extension"):
        read_labeled(write(tmp_path, "x.json", "[]"))
    with pytest.raises(UserError, match="is a directory"):
        read_labeled(tmp_path)


def test_jsonl_errors(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n')
    with pytest.raises(UserError, match=rf"{p}:2: not valid JSON"):
        read_labeled(p)
    p = write(tmp_path, "b.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=rf"{p}:2: expected a JSON object"):
        read_labeled(p)
    p = write(tmp_path, "c.jsonl", '{"text": "a", "label": 1}\n{"label": 0}\n')
    with pytest.raises(UserError, match=rf"{p}:2: missing key 'text'"):
        read_labeled(p)


def test_csv_unbalanced_quote_is_reported(tmp_path):
    p = write(tmp_path, "a.csv", 'text,label\ngood,1\n"oops,0\nmore,1\n')
    with pytest.raises(UserError, match=rf"{p}:3: .*unbalanced"):
        read_labeled(p)


def test_skip_bad_rows_records_lines_and_reasons(tmp_path):
    content = b"sentence\tlabel\nok\t1\nstray\ttab\t0\n\t1\nbad \xff\t0\nfine\tx\nlast\t0\n"
    p = write(tmp_path, "a.tsv", content)
    ds = read_labeled(p, skip_bad_rows=True, label_names=["0", "1"])
    assert ds.texts_a == ["ok", "last"] and ds.labels == [1, 0] and ds.lines == [2, 7]
    assert [line for line, _ in ds.skipped] == [3, 4, 5, 6]
    reasons = dict(ds.skipped)
    assert "found 3" in reasons[3] and "empty text" in reasons[4]
    assert "UTF-8" in reasons[5] and "label 'x'" in reasons[6]
    assert "skipped 4 bad row(s)" in ds.skipped_summary()
    # Without the flag the first problem is raised, and the count of the others is given.
    with pytest.raises(UserError, match=rf"{p}:3: .*3 more row\(s\)"):
        read_labeled(p, label_names=["0", "1"])


def test_every_row_bad_raises_even_when_skipping(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\na\tb\tc\n\t1\n")
    with pytest.raises(UserError, match="Every one of the 2 data rows is bad"):
        read_labeled(p, skip_bad_rows=True)


def test_bad_arguments(tmp_path):
    p = write(tmp_path, "a.tsv", "sentence\tlabel\na\t1\n")
    with pytest.raises(UserError, match="unknown task"):
        read_labeled(p, task="ranking")
    with pytest.raises(UserError, match="duplicates"):
        read_labeled(p, label_names=["1", "1"])
    with pytest.raises(UserError, match="one text column, or two"):
        read_labeled(p, text_cols=[])
    with pytest.raises(UserError, match="both as text and as label"):
        read_labeled(p, text_cols=["label"], label_col="label")


def test_find_split(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 0}\n')
    (tmp_path / "validation.csv").write_text("text,label\na,0\n")
    assert find_split(tmp_path, "train") == tmp_path / "train.jsonl"
    assert find_split(tmp_path, "dev") == tmp_path / "validation.csv"
    with pytest.raises(UserError, match=r"no file for split 'test'.*train.jsonl, validation.csv"):
        find_split(tmp_path, "test")
    (tmp_path / "train.tsv").write_text("text\tlabel\na\t0\n")
    with pytest.raises(UserError, match="more than one file"):
        find_split(tmp_path, "train")
    with pytest.raises(UserError, match="does not exist"):
        find_split(tmp_path / "missing", "train")


# ------------------------------------------------------------------------------------------------ property

_messy_cell = st.text(alphabet=list("ab 1.0-\t,\"'\r\n\\{}[]:\x00é\ufeff"), max_size=8)
_clean_cell = st.sampled_from(["a b", "word", "1", "0", "2.5", "3", "nan", "inf", "", " "])
_cell = st.one_of(_clean_cell, _clean_cell, _clean_cell, _clean_cell, _messy_cell)  # 1 in 5 messy


@st.composite
def _labeled_file(draw):
    """(extension, bytes): mostly well-formed rows with the odd defect, sometimes arbitrary bytes."""
    ext = draw(st.sampled_from(["tsv", "csv", "jsonl"]))
    if draw(st.integers(0, 9)) == 0:
        return ext, draw(st.binary(max_size=120))
    header = draw(st.sampled_from([["text", "label"], ["sentence1", "sentence2", "score"], ["a"], ["text"]]))
    rows = draw(st.lists(st.lists(_cell, min_size=len(header), max_size=len(header)), max_size=6))
    for r in rows:
        if draw(st.integers(0, 4)) == 0:  # wrong number of cells
            if draw(st.booleans()):
                r.append(draw(_cell))
            else:
                r.pop()
    if ext == "jsonl":
        lines = [json.dumps(dict(zip(header, r))) if draw(st.integers(0, 5)) else json.dumps(r) for r in rows]
    else:
        sep = "\t" if ext == "tsv" else ","
        lines = [sep.join(header)] + [sep.join(r) for r in rows]
    data = (draw(st.sampled_from(["\n", "\r\n"]))).join(lines).encode("utf-8")
    if data and draw(st.integers(0, 4)) == 0:  # an undecodable byte somewhere
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + b"\xff" + data[pos + 1:]
    return ext, data


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=_labeled_file(), skip=st.booleans(),
       header=st.booleans(), require=st.booleans(), task=st.sampled_from([None, "classification", "regression"]))
def test_any_file_reads_cleanly_or_raises_user_error(tmp_path, file, skip, header, require, task):
    ext, content = file
    p = tmp_path / f"fuzz.{ext}"
    p.write_bytes(content)
    # Without a header the columns are indices and cannot be auto-detected.
    cols = {} if header else {"text_cols": ["0"], "label_col": "1"}
    try:
        ds = read_labeled(p, skip_bad_rows=skip, header=header, require_labels=require, task=task, **cols)
    except UserError as e:
        assert str(e)
        return
    n = len(ds)
    assert n > 0 and len(ds.lines) == n and (ds.texts_b is None or len(ds.texts_b) == n)
    assert all(t and t == t.strip() for t in ds.texts_a)
    if not skip:
        assert ds.skipped == []
    if ds.labels is not None:
        assert len(ds.labels) == n
        if ds.task == "classification":
            assert all(0 <= y < ds.num_labels for y in ds.labels)
        else:
            assert all(math.isfinite(y) for y in ds.labels)
