"""Labeled files for fine-tuning: TSV, CSV and JSON Lines, and GLUE task directories, validated row by row.

A labeled file becomes a ``LabeledSet``: one or two text columns, an optional label column, the task
("classification" or "regression") and, for every example, the line it came from so later messages can point
at it. Every problem a user can fix is a ``UserError`` naming ``file:line``; with ``skip_bad_rows=True`` a bad row
is dropped and recorded in ``LabeledSet.skipped`` instead, never silently.

Formats are chosen by extension (``format="auto"``), or named explicitly, never guessed from the contents:

- ``.tsv``: split on tabs with no quote handling. GLUE files contain bare ``"`` characters (MRPC, STS-B, QNLI);
  a quote-aware reader would merge rows across them.
- ``.csv``: the ``csv`` module with ordinary double-quote quoting, so a field may contain commas or newlines.
- ``.jsonl``: one JSON object per line; the keys are the columns.
- ``label-space``: ``LABEL TEXT`` per line, the label the first word (TREC's ``DESC:manner How did ...``;
  fastText's ``__label__pos great film``, the prefix dropped); ``coarse_labels`` keeps what precedes a ``:``.
- ``label-colon``: ``LABEL:TEXT`` per line.
- ``files-per-class``: a directory with one file per class and one example per line (MR's ``rt-polarity.pos`` /
  ``.neg``, SUBJ's ``quote.tok.gt9.5000`` / ``plot.tok.gt9.5000``); the class names are the file names less the
  parts all of them share (``pos``/``neg``, ``quote``/``plot``), and the reader says which file became which class.

Delimited files without a header row are read with ``header=False``; their columns are then 0-based positions.

The file is read as bytes and each line decoded on its own (UTF-8 unless ``encoding`` names another codec, e.g.
``cp1252`` for older corpora), so an undecodable line is reported with its number. Lines are split at ``\n`` only:
a U+0085 or U+2028 inside a line stays text (``str.splitlines`` would cut the example there), and the reader's
``notes`` say so, as they say when a non-UTF-8 encoding met non-ASCII text or latin-1 turned cp1252 punctuation into
invisible control characters. A leading BOM (MRPC) is dropped, CRLF and CR line endings are accepted, blank lines
are ignored, and text cells are stripped of surrounding whitespace (SST-2 ends every sentence with a space).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import UserError
from ..options import Settings, option

# Column names tried, in order, when the caller does not name the text / label columns. These cover the GLUE
# files (SST-2, MRPC, STS-B, QNLI, RTE, MNLI, ...) and the usual text_a/text_b and text/label conventions.
TEXT_COLUMN_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("#1 String", "#2 String"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("text_a", "text_b"),
    ("sentence",),
    ("text",),
)
LABEL_COLUMN_CANDIDATES: tuple[str, ...] = ("label", "Quality", "score", "labels", "gold_label")
# A column with one of these names identifies its row: a value seen twice is a bad row (a file concatenated with
# itself, or a split leaking into another). MRPC's "#1 ID" / "#2 ID" name sentences, not rows, and may repeat.
ID_COLUMN_CANDIDATES: tuple[str, ...] = ("id", "idx", "index", "guid")

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
LINE_FORMATS = ("label-space", "label-colon")  # one example per line, the label in the line
FILES_PER_CLASS = "files-per-class"
FORMAT_CHOICES = ("auto", "tsv", "csv", "jsonl", *LINE_FORMATS, FILES_PER_CLASS)
TASKS = ("classification", "regression")
# How a command names the reading options in its messages. A compare spec passes its own keys (task.text_cols).
CLI_FLAGS = {"text_cols": "--text-cols", "label_col": "--label-col", "header": "--no-header",
             "format": "--format", "encoding": "--encoding", "skip_bad_rows": "--skip-bad-rows",
             "label_names": "--label-names"}

# GLUE calls the validation split "dev"; other collections call it "validation" or "val".
_SPLIT_ALIASES = {
    "dev": ("validation", "valid", "val"),
    "validation": ("dev", "valid", "val"),
    "valid": ("dev", "validation", "val"),
    "val": ("dev", "validation", "valid"),
}
_SKIP_HINT = ("Fix the file, or pass {skip} to drop bad rows; dropped rows are listed, never dropped "
              "silently.")


@dataclass
class ReadOptions(Settings):
    """How to read a labeled file: columns, header, format, encoding, bad rows; for image data, size and path
    column. Every command that reads labeled data takes these options, and a compare spec's ``task:`` the keys."""

    text_cols: list[str] | None = option(None, "the text column(s): one, or two for sentence pairs; 0-based "
                                               "positions with --no-header", metavar="COL[,COL]",
                                         default_text="found by name (sentence, text, sentence1/sentence2, ...)")
    label_col: str | None = option(None, "the label column (a 0-based position with --no-header)", metavar="COL",
                                   default_text="found by name (label, score, ...)")
    header: bool = option(True, "whether the first row names the columns; --no-header reads a file without one "
                                "(AG News' CSV, CoLA's TSV) with columns by 0-based position")
    format: str = option("auto", "how the file is laid out: auto (by extension: .tsv, .csv, .jsonl), or label-space "
                                 "(TREC, fastText: the label, a space, the text), label-colon (LABEL:TEXT), "
                                 "files-per-class (a directory with one file of lines per class: MR's .pos/.neg, "
                                 "SUBJ)", choices=FORMAT_CHOICES)
    encoding: str = option("utf-8", "text encoding of the file(s), e.g. cp1252 or latin-1 for older corpora; what "
                                    "decoding changed is reported")
    coarse_labels: bool = option(False, "keep the part of each label before ':' (TREC's 6 coarse classes from "
                                        "labels like DESC:manner)")
    skip_bad_rows: bool = option(False, "drop malformed rows (they are listed) instead of stopping at the first")
    image_size: tuple[int, int] | None = option(None, "images: resize every image to H,W while reading",
                                                metavar="H,W", default_text="as stored")
    path_col: str | None = option(None, "images or audio clips in a CSV: the column of file paths", metavar="COL",
                                  default_text="found by name (path, image, file, ...)")

    def check(self) -> None:
        super().check()
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise self.error("encoding", f"'{self.encoding}' is not an encoding Python knows; use e.g. utf-8, "
                                         f"cp1252, latin-1") from None

    def text_options(self) -> dict:
        """The keyword arguments ``read_labeled`` takes."""
        return {"text_cols": self.text_cols, "label_col": self.label_col, "header": self.header,
                "format": self.format, "encoding": self.encoding, "coarse_labels": self.coarse_labels,
                "skip_bad_rows": self.skip_bad_rows}

    def given(self) -> dict:
        """The options that differ from their defaults, as ``inputs.labeled_data`` takes them (``resize`` for the
        image size): what a user asked for, so a text option given to an image model can be named."""
        out = {k: v for k, v in self.__dict__.items() if v != type(self).defaults().get(k)}
        if "image_size" in out:
            out["resize"] = out.pop("image_size")
        return out


ReadOptions.section = "reading the data"


@dataclass
class LabeledSet:
    """Examples read from one labeled file.

    ``labels`` holds class ids (classification) or floats (regression), or is None when the file has no labels.
    ``lines[i]`` is the 1-based source line of example ``i``; ``skipped`` lists ``(line, reason)`` for rows
    dropped with ``skip_bad_rows``.
    """

    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[int] | list[float] | None
    task: str
    label_names: list[str] | None
    source: str
    lines: list[int]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reading changed or assumed (encoding, class files)

    def __len__(self) -> int:
        return len(self.texts_a)

    @property
    def num_labels(self) -> int | None:
        """Number of classes for classification (None if unknown), 1 for regression."""
        if self.task == "regression":
            return 1
        return None if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.texts_b is not None

    def subset(self, indices: Iterable[int]) -> "LabeledSet":
        """The examples at ``indices`` (any iterable of ints, numpy array or tensor), in that order."""
        idx = [int(i) for i in indices]
        return LabeledSet(
            texts_a=[self.texts_a[i] for i in idx],
            texts_b=None if self.texts_b is None else [self.texts_b[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            task=self.task,
            label_names=None if self.label_names is None else list(self.label_names),
            source=self.source,
            lines=[self.lines[i] for i in idx],
            skipped=list(self.skipped),
            notes=list(self.notes),
        )

    def skipped_summary(self, max_rows: int = 5) -> str:
        """A short human-readable account of the dropped rows ("" when none were dropped)."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.skipped[:max_rows])
        more = len(self.skipped) - max_rows
        tail = f"; ... and {more} more" if more > 0 else ""
        return f"{self.source}: skipped {len(self.skipped)} bad row(s) ({shown}{tail})."


def find_split(path_or_dir: str | Path, split: str) -> Path:
    """Resolve a split: a file is returned as is; a directory gives ``dir/{split}.tsv`` (or .csv / .jsonl).

    ``dev`` and ``validation`` (also ``valid``, ``val``) stand in for each other when the exact name is absent.
    """
    path = Path(path_or_dir)
    if not path.exists():
        raise UserError(f"'{path}' does not exist. Pass a labeled file (.tsv, .csv, .jsonl) or a directory "
                        f"that holds {split}.tsv / {split}.csv / {split}.jsonl.")
    if path.is_file():
        return path
    for name in (split, *_SPLIT_ALIASES.get(split, ())):
        found = [path / f"{name}{ext}" for ext in FORMATS if (path / f"{name}{ext}").is_file()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listed = ", ".join(p.name for p in found)
            raise UserError(f"'{path}' holds more than one file for split '{split}' ({listed}). Pass the file "
                            f"you mean directly instead of the directory.")
    present = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in FORMATS)
    what = ", ".join(present) if present else "no .tsv, .csv or .jsonl files"
    raise UserError(f"directory '{path}' has no file for split '{split}' (looked for {split}.tsv, {split}.csv, "
                    f"{split}.jsonl). It contains: {what}. Pass the file itself, or name the split after one of "
                    f"those files.")


def read_labeled(
    path: str | Path,
    text_cols: Sequence[str] | str | None = None,
    label_col: str | None = None,
    task: str | None = None,
    label_names: Sequence[str] | None = None,
    skip_bad_rows: bool = False,
    require_labels: bool = True,
    header: bool = True,
    format: str = "auto",
    encoding: str = "utf-8",
    coarse_labels: bool = False,
    flags: dict | None = None,
) -> LabeledSet:
    """Read and validate a labeled file (TSV / CSV / JSONL, the line formats), or a directory of class files.

    Args:
        path: the file (a directory with ``format="files-per-class"``).
        text_cols: one or two text columns (a list, or a comma-separated string). None auto-detects them from
            ``TEXT_COLUMN_CANDIDATES``. With ``header=False`` columns are 0-based index strings ("0", "3").
        label_col: the label column. None auto-detects from ``LABEL_COLUMN_CANDIDATES``.
        task: "classification" or "regression"; None infers regression when the labels are non-integer numbers.
        label_names: the class names in id order; any other label value is an error. None uses the sorted set
            of values seen (numerically when they are all integers).
        skip_bad_rows: drop bad rows and record them in ``skipped`` instead of raising.
        require_labels: when False (prediction), a file without the label column, or with any empty label
            cell, gives ``labels=None``; an explicit ``label_col`` that is absent is then not an error either.
            Labels that are present in every row are still parsed and validated.
        header: whether the first row names the columns (JSON Lines always uses the keys).
        format: "auto" (by extension), or one of ``FORMAT_CHOICES`` (see the module docstring).
        encoding: the files' text encoding (a Python codec name).
        coarse_labels: keep the part of each label before its first ':'.
        flags: how the caller's user names the options in messages (``CLI_FLAGS`` by default).

    Returns:
        a ``LabeledSet``.
    """
    path = Path(path)
    source = str(path)
    flags = {**CLI_FLAGS, **(flags or {})}
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task '{task}' for '{path}'. Use 'classification' or 'regression'.")
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if not label_names or len(set(label_names)) != len(label_names):
            raise UserError(f"the label set {label_names} given for '{path}' must be non-empty with no "
                            f"duplicates. Pass each class name once, in id order.")
        if task == "regression":
            raise UserError(f"label names were given for '{path}' but the task is regression, which has no "
                            f"classes. Drop the label names or use task 'classification'.")
    if format not in FORMAT_CHOICES:
        raise UserError(f"unknown {flags['format']} '{format}'; choose {', '.join(FORMAT_CHOICES)}.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"{flags['encoding']} '{encoding}' is not an encoding Python knows; use e.g. utf-8, cp1252, "
                        f"latin-1.") from None
    if isinstance(text_cols, str):
        text_cols = [c.strip() for c in text_cols.split(",") if c.strip()]

    notes: list[str] = []
    if format == FILES_PER_CLASS:
        columns, records, notes = _class_files(path, encoding, flags)
        fmt, header, bad_lines, lines = "tsv", True, {}, []
    else:
        fmt = _check_file(path, format, flags)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read labeled file '{path}': {e.strerror or e}. Check the path and its "
                            f"permissions.") from None
        if path.name.lower().endswith(".gz"):  # e.g. muse_en-fr.tsv.gz: read as the format before .gz
            raw = _gunzip(raw, path)
        lines, bad_lines = _decode_lines(raw, encoding)
        notes = encoding_notes(lines, encoding, str(path), flags)
        if fmt == "jsonl":
            columns, records = _parse_jsonl(lines)
        elif fmt in LINE_FORMATS:
            columns, records = ["label", "text"], list(_line_records(lines, fmt, bad_lines, encoding, flags))
            fmt, header, bad_lines = "tsv", True, {}
        else:
            columns, records = _parse_delimited(lines, fmt, header, path, bad_lines)
    if not records:
        raise UserError(f"'{path}' has no data rows" + (" after its header row" if header and columns else "")
                        + ". Check that you passed the right file.")

    text_cols, label_col = _select_columns(path, columns, text_cols, label_col, require_labels, header, fmt, flags)
    label_name = label_col[0] if isinstance(label_col, tuple) else label_col
    id_col = _id_column(columns, text_cols, label_col, fmt) if header or fmt == "jsonl" else None
    seen_ids: dict[str, int] = {}

    bad: list[tuple[int, str]] = []
    keep_lines: list[int] = []
    texts = [[] for _ in text_cols]
    raw_labels: list[str | None] = []
    sep_name = "tab" if fmt == "tsv" else "comma"
    for start, end, rec in records:
        reason = _undecodable(start, end, bad_lines, encoding, flags) if bad_lines else None
        if reason is None:
            if isinstance(rec, str):  # the parser already found the row broken
                reason = rec
            elif fmt != "jsonl" and len(rec) != len(columns):
                text = "\n".join(lines[start - 1:end])
                reason = _field_count_reason(fmt, sep_name, len(columns), len(rec), start, end, text)
        if reason is None:
            row_texts, reason = _row_texts(rec, text_cols, fmt)
        if reason is None and label_col is not None:
            label, reason = _cell_label(rec, label_col, fmt)
            if reason is None and label is not None and coarse_labels:
                label = label.split(":", 1)[0].strip() or label
            if reason is None and label is None and require_labels:
                reason = f"missing label in column '{label_name}'"
        if reason is None and id_col is not None:
            reason = _duplicate_id(rec, id_col, fmt, start, seen_ids)
        if reason is not None:
            bad.append((start, reason))
            continue
        keep_lines.append(start)
        for j, t in enumerate(row_texts):
            texts[j].append(t)
        raw_labels.append(label if label_col is not None else None)

    have_labels = label_col is not None and bool(raw_labels) and all(v is not None for v in raw_labels)
    labels = None
    if have_labels:
        if task is None:
            task = "classification" if label_names is not None else _infer_task(raw_labels)
        if task == "regression":
            labels, label_bad = _regression_targets(raw_labels, keep_lines, label_name)
        else:
            label_names, labels, label_bad = _class_ids(raw_labels, keep_lines, label_names)
        if label_bad:
            drop = {line for line, _ in label_bad}
            keep = [i for i, line in enumerate(keep_lines) if line not in drop]
            texts = [[col[i] for i in keep] for col in texts]
            labels = [labels[i] for i in keep]
            keep_lines = [keep_lines[i] for i in keep]
            bad = sorted(bad + label_bad)
    elif task is None:
        task = "classification"

    if bad and (not skip_bad_rows or not keep_lines):
        line, reason = bad[0]
        if not keep_lines:
            raise UserError(f"{path}:{line}: {reason}. Every one of the {len(bad)} data rows is bad, so there "
                            f"is nothing to read; check the format, the columns and the label set.")
        others = f" {len(bad) - 1} more row(s) have problems too." if len(bad) > 1 else ""
        skip = ("skip_bad_rows=True (--skip-bad-rows on the command line)" if flags["skip_bad_rows"] ==
                CLI_FLAGS["skip_bad_rows"] else flags["skip_bad_rows"])
        raise UserError(f"{path}:{line}: {reason}.{others} {_SKIP_HINT.format(skip=skip)}")

    return LabeledSet(
        texts_a=texts[0],
        texts_b=texts[1] if len(texts) > 1 else None,
        labels=labels,
        task=task,
        label_names=label_names if task == "classification" else None,
        source=source,
        lines=keep_lines,
        skipped=bad,
        notes=notes,
    )


# Label checks: a label in at most this many training rows (and under 1% of them) that the dev set never has is
# more likely a typo or a stray header row than a class.
RARE_ROWS = 5


def label_warnings(train, dev=None, flags: dict | None = None) -> list[str]:
    """Training labels that look like mistakes rather than classes, one sentence each (empty when none do): a
    label in only a handful of rows that the dev set never has, and labels of another kind than the rest (a word
    among numbers: 'positive' among 0/1; a number among words). Works on any labeled set (text or images)."""
    flags = {**CLI_FLAGS, **(flags or {})}
    if getattr(train, "task", "classification") != "classification" or train.labels is None or not train.label_names:
        return []
    names = [str(n) for n in train.label_names]
    labels = [int(v) for v in train.labels]
    counts = [0] * len(names)
    first: dict[int, int] = {}
    for i, k in enumerate(labels):
        counts[k] += 1
        first.setdefault(k, train.lines[i])
    n = len(labels)
    out = []
    fix = "Fix or drop those rows" + (f", or pass the real label set with {flags['label_names']}"
                                      if flags.get("label_names") else "")
    if dev is not None and dev.labels is not None:
        in_dev = {int(v) for v in dev.labels}
        for k, name in enumerate(names):
            if 0 < counts[k] <= RARE_ROWS and counts[k] < 0.01 * n and k not in in_dev:
                out.append(f"{train.source}:{first[k]}: label '{name}' is in only {counts[k]} of {n:,} training "
                           f"rows and never in {dev.source}: a typo, a stray header row, or a class too rare to "
                           f"learn. {fix}")
    numeric = [k for k, name in enumerate(names) if _as_float(name) is not None]
    words = [k for k in range(len(names)) if k not in numeric]
    if numeric and words:
        odd, usual = (words, numeric) if sum(counts[k] for k in words) < sum(counts[k] for k in numeric) else \
            (numeric, words)
        kind = "a word among numeric labels" if odd is words else "a number among word labels"
        shown = ", ".join(names[k] for k in usual[:6]) + (", ..." if len(usual) > 6 else "")
        for k in odd[:5]:
            if counts[k]:
                out.append(f"{train.source}:{first[k]}: label '{names[k]}' ({counts[k]} rows) is {kind} ({shown}): "
                           f"the label set does not look like one task's. {fix}")
    return out


# --------------------------------------------------------------------------------------------------- reading


def _check_file(path: Path, format: str = "auto", flags: dict = CLI_FLAGS) -> str:
    if not path.exists():
        raise UserError(f"labeled file '{path}' does not exist. Check the path.")
    if path.is_dir():
        raise UserError(f"'{path}' is a directory, not a labeled file. Pass the file itself, or pass the "
                        f"directory where a split name is expected (e.g. train / dev); a directory with one file "
                        f"per class is read with {flags['format']} {FILES_PER_CLASS}.")
    fmt = format if format != "auto" else \
        FORMATS.get(Path(path.name[:-3] if path.name.lower().endswith(".gz") else path.name).suffix.lower())
    if fmt is None:
        raise UserError(f"'{path}' has an unsupported extension '{path.suffix}'. Labeled files must be .tsv "
                        f"(tab-separated), .csv or .jsonl (one JSON object per line), each may be gzipped (.tsv.gz); "
                        f"rename the file to the extension that matches its format, or name its layout with "
                        f"{flags['format']} (tsv, csv, jsonl, label-space for 'LABEL TEXT' lines as in TREC and "
                        f"fastText, label-colon for 'LABEL:TEXT').")
    if path.stat().st_size == 0:
        raise UserError(f"labeled file '{path}' is empty. Check the path, or that the file was fully written.")
    return fmt


def _gunzip(raw: bytes, path: Path) -> bytes:
    import gzip
    import zlib

    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"'{path}' ends in .gz but cannot be decompressed ({e}); the file is damaged or not "
                        f"gzip. Re-fetch it, or drop the .gz from its name if it is plain text.") from None


def _decode_lines(raw: bytes, encoding: str = "utf-8") -> tuple[list[str], dict[int, str]]:
    """Split bytes into lines (at "\\n" only) and decode each with ``encoding``.

    Returns the lines (no line endings; undecodable ones decoded with replacement characters) and, for each
    undecodable line, its 1-based number mapped to a description of the first bad byte.
    """
    utf8 = codecs.lookup(encoding).name == "utf-8"
    if utf8 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\n" not in raw and b"\r" in raw:  # old Mac line endings
        raw = raw.replace(b"\r", b"\n")
    bad: dict[int, str] = {}
    try:
        # Fast path: the whole file decodes. A "\n" byte never occurs inside a multi-byte UTF-8 sequence (nor in
        # the single-byte codecs), so splitting the text or the bytes gives the same lines.
        lines = raw.decode(encoding).split("\n")
    except UnicodeDecodeError:
        lines = []
        for i, chunk in enumerate(raw.split(b"\n")):
            try:
                lines.append(chunk.decode(encoding))
            except UnicodeDecodeError as e:
                bad[i + 1] = f"byte 0x{chunk[e.start]:02x} at column {e.start + 1}"
                lines.append(chunk.decode(encoding, errors="replace"))
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines], bad


# C1 control characters: invisible, and what latin-1 makes of cp1252's curly quotes, dashes and ellipsis (0x85).
_C1 = re.compile("[\u0080-\u009f]")
_BREAKS = re.compile("[\u0085\u2028\u2029\x0b\x0c\x1c-\x1e]")  # what str.splitlines() would also cut at


def encoding_notes(lines: list[str], encoding: str, source: str, flags: dict = CLI_FLAGS) -> list[str]:
    """What decoding did that a reader should know: non-ASCII text read in a non-UTF-8 encoding, invisible control
    characters (latin-1 on a cp1252 file), line-break characters kept inside a line."""
    notes = []
    utf8 = codecs.lookup(encoding).name == "utf-8"
    if not utf8:
        wide = [i for i, line in enumerate(lines, 1) if not line.isascii()]
        if wide:
            line = lines[wide[0] - 1]
            at = next(j for j, ch in enumerate(line) if ord(ch) > 127)
            notes.append(f"{source}: read as {encoding}: {len(wide)} line(s) hold non-ASCII characters (first on "
                         f"line {wide[0]}: '...{line[max(0, at - 15):at + 15]}...'); check that they read right")
    c1 = [i for i, line in enumerate(lines, 1) if _C1.search(line)]
    if c1:
        ch = _C1.search(lines[c1[0] - 1]).group(0)
        fix = (f"; in a cp1252 file these bytes are punctuation (0x85 is '...', 0x93/0x94 quotes): pass "
               f"{flags['encoding']} cp1252" if codecs.lookup(encoding).name in ("latin-1", "iso8859-1")
               else "; they are kept as they are")
        notes.append(f"{source}: {len(c1)} line(s) hold invisible control characters (first: U+{ord(ch):04X} on "
                     f"line {c1[0]}){fix}")
    breaks = [i for i, line in enumerate(lines, 1) if _BREAKS.search(line)]
    if breaks:
        ch = _BREAKS.search(lines[breaks[0] - 1]).group(0)
        notes.append(f"{source}: {len(breaks)} line(s) hold a character some readers take for a line break "
                     f"(first: U+{ord(ch):04X} on line {breaks[0]}); lines are split at \\n only, so it stays "
                     f"inside its example")
    return notes


def _line_records(lines: list[str], fmt: str, bad_lines: dict[int, str], encoding: str = "utf-8",
                  flags: dict = CLI_FLAGS) -> Iterator[tuple[int, int, list | str]]:
    """(line, line, [label, text] or the reason it is bad) for the one-example-per-line formats."""
    for i, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        if i in bad_lines:
            yield i, i, _undecodable(i, i, bad_lines, encoding, flags)
            continue
        if fmt == "label-colon":
            label, sep, text = line.partition(":")
            if not sep:
                yield i, i, "no ':' between the label and the text (--format label-colon reads LABEL:TEXT)"
                continue
        else:
            label, text = (re.split(r"\s+", line.strip(), maxsplit=1) + [""])[:2]
            if label.startswith("__label__"):  # fastText
                if text.lstrip().startswith("__label__"):
                    yield i, i, "several labels on one line (fastText multi-label); this reader takes one label"
                    continue
                label = label[len("__label__"):]
        yield i, i, [label.strip(), text.strip()]


def _class_files(path: Path, encoding: str, flags: dict):
    """(columns, records, notes) of a directory holding one file of examples per class."""
    if not path.is_dir():
        raise UserError(f"{flags['format']} {FILES_PER_CLASS} reads a directory holding one file per class (e.g. "
                        f"rt-polarity.pos and rt-polarity.neg), but '{path}' is "
                        f"{'a file' if path.exists() else 'missing'}.")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < 2:
        raise UserError(f"'{path}' holds {len(files)} file(s); {flags['format']} {FILES_PER_CLASS} needs one file "
                        f"per class, at least two. Put each class's examples (one per line) in its own file.")
    names = class_names_from_files([p.name for p in files])
    records, notes, counts = [], [], []
    for name, file in zip(names, files):
        raw = file.read_bytes()
        if file.name.lower().endswith(".gz"):
            raw = _gunzip(raw, file)
        lines, bad_lines = _decode_lines(raw, encoding)
        notes += encoding_notes(lines, encoding, str(file), flags)
        n = 0
        for i, line in enumerate(lines, start=1):
            if not line or line.isspace():
                continue
            if i in bad_lines:
                records.append((i, i, f"in {file.name}: {_undecodable(i, i, bad_lines, encoding, flags)}"))
                continue
            records.append((i, i, [name, line.strip()]))
            n += 1
        counts.append(f"'{name}' from {file.name} ({n:,} lines)")
    notes.insert(0, f"{path}: one class per file: {', '.join(counts)}")
    return ["label", "text"], records, notes


def class_names_from_files(names: list[str]) -> list[str]:
    """Class names from file names: the parts (split at '.', '-', '_') all of them share at the start and at the
    end are dropped. rt-polarity.pos / rt-polarity.neg -> pos / neg; quote.tok.gt9.5000 / plot.tok.gt9.5000 ->
    quote / plot; positive.txt / negative.txt -> positive / negative."""
    parts = [re.split(r"([._-])", n) for n in names]  # separators kept, so a class name keeps its inner ones
    lead = 0
    while all(len(p) > lead + 2 for p in parts) and len({tuple(p[lead:lead + 2]) for p in parts}) == 1:
        lead += 2
    tail = 0
    while all(len(p) > lead + tail + 2 for p in parts) and len({tuple(p[len(p) - tail - 2:len(p) - tail])
                                                                     for p in parts}) == 1:
        tail += 2
    out = ["".join(p[lead:len(p) - tail]) for p in parts]
    return out if len(set(out)) == len(out) and all(out) else names


def _undecodable(start: int, end: int, bad_lines: dict[int, str], encoding: str = "utf-8",
                 flags: dict = CLI_FLAGS) -> str | None:
    if not bad_lines:
        return None
    for line in range(start, end + 1):
        if line in bad_lines:
            if codecs.lookup(encoding).name != "utf-8":
                return (f"line {line} is not valid {encoding} ({bad_lines[line]}); name the file's real encoding "
                        f"with {flags['encoding']}")
            return (f"line {line} is not valid UTF-8 ({bad_lines[line]}); re-save the file as UTF-8, or, if it is in "
                    f"another encoding (older corpora are often cp1252 or latin-1), pass {flags['encoding']} cp1252")
    return None


def _parse_delimited(lines: list[str], fmt: str, header: bool, path: Path, bad_lines: dict[int, str]):
    """Return (column names, [(start line, end line, fields or error string)]) for TSV / CSV."""
    records = list(_tsv_records(lines) if fmt == "tsv" else _csv_records(lines))
    if not records:
        raise UserError(f"labeled file '{path}' has only blank lines. Check the path.")
    if header:
        start, end, names = records.pop(0)
        if isinstance(names, str) or _undecodable(start, end, bad_lines):
            problem = names if isinstance(names, str) else _undecodable(start, end, bad_lines)
            raise UserError(f"{path}:{start}: cannot read the header row: {problem}.")
        columns = [n.strip() for n in names]
    else:
        first = next((r for _, _, r in records if not isinstance(r, str)), [])
        columns = [str(i) for i in range(len(first))]
    return columns, records


def _tsv_records(lines: list[str]) -> Iterator[tuple[int, int, list[str]]]:
    for i, line in enumerate(lines, start=1):
        if line and not line.isspace():
            yield i, i, line.split("\t")


def _csv_records(lines: list[str]) -> Iterator[tuple[int, int, list[str] | str]]:
    reader = csv.reader(line + "\n" for line in lines)
    prev = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "new-line" in str(e):
                reason = "a bare carriage return (\\r) inside an unquoted field; quote the field or remove the \\r"
            else:  # e.g. a field over the size limit: an unbalanced quote swallowed the rest of the file
                reason = f"CSV parse error ({e}); check for an unbalanced '\"' that starts a quoted field"
            yield prev + 1, max(reader.line_num, prev + 1), reason
            prev = reader.line_num
            continue
        start, prev = prev + 1, reader.line_num
        if not rec or (len(rec) == 1 and rec[0].strip() == ""):
            continue
        yield start, prev, rec


def _parse_jsonl(lines: list[str]):
    """Return (keys in first-seen order, [(line, line, dict or error string)]) for JSON Lines."""
    columns: dict[str, None] = {}
    records = []
    for i, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            msg = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            records.append((i, i, f"not valid JSON ({msg})"))
            continue
        if not isinstance(obj, dict):
            records.append((i, i, f"expected a JSON object ({{\"key\": value, ...}}), found {_json_type(obj)}"))
            continue
        columns.update(dict.fromkeys(obj))
        records.append((i, i, obj))
    return list(columns), records


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _field_count_reason(fmt: str, sep_name: str, expected: int, got: int, start: int, end: int, text: str) -> str:
    reason = f"expected {expected} {sep_name}-separated field(s) but found {got}"
    if fmt == "tsv":
        return reason + " (a stray tab inside a text, or a missing cell?)"
    if text.count('"') % 2:
        span = f" in a record spanning lines {start}-{end}" if end > start else ""
        return reason + span + " (an unbalanced '\"' starts a quoted field that never closes)"
    return reason + " (quote fields that contain commas: \"like, this\")"


# --------------------------------------------------------------------------------------------------- columns


def _select_columns(path, columns, text_cols, label_col, require_labels, header, fmt, flags=CLI_FLAGS):
    how = (f"columns are 0-based indices because of {flags['header']}" if fmt != "jsonl" and not header
           else "column names")
    available = ", ".join(f"'{c}'" for c in columns) or "(none)"

    def missing(col: str, option: str) -> UserError:
        hint = ""
        if fmt != "jsonl" and header and col.isdigit():
            hint = (f" If the file has no header row, read it with {flags['header']} and refer to columns by "
                    f"0-based index.")
        return UserError(f"'{path}' has no column '{col}' ({how}). Available columns: {available}. "
                         f"Pass {option} with one of those.{hint}")

    if text_cols is None:
        present = set(columns)
        text_cols = next((list(c) for c in TEXT_COLUMN_CANDIDATES if all(n in present for n in c)), None)
        if text_cols is None:
            tried = ", ".join("/".join(c) for c in TEXT_COLUMN_CANDIDATES)
            headless = (f" If the file has no header row, read it with {flags['header']} and name the columns by "
                        f"0-based position." if fmt != "jsonl" and header else "")
            raise UserError(f"cannot tell which column of '{path}' holds the text: none of the usual names "
                            f"({tried}) is present. Available columns: {available}. Pass {flags['text_cols']} with "
                            f"one column, or two for sentence pairs.{headless}")
    else:
        text_cols = list(text_cols)
        if not 1 <= len(text_cols) <= 2:
            raise UserError(f"{flags['text_cols']} for '{path}' must name one text column, or two for sentence "
                            f"pairs; got {len(text_cols)}: {text_cols}.")
        for col in text_cols:
            if col not in columns:
                raise missing(col, flags["text_cols"])

    if label_col is None:
        label_col = next((c for c in LABEL_COLUMN_CANDIDATES if c in columns and c not in text_cols), None)
        if label_col is None and require_labels:
            raise UserError(f"cannot tell which column of '{path}' holds the labels: none of "
                            f"{', '.join(LABEL_COLUMN_CANDIDATES)} is present. Available columns: {available}. "
                            f"Pass {flags['label_col']}.")
    elif label_col not in columns:
        if require_labels:
            raise missing(label_col, flags["label_col"])
        label_col = None
    if label_col is not None and label_col in text_cols:
        raise UserError(f"column '{label_col}' of '{path}' is used both as text and as label. Pass different "
                        f"columns to {flags['text_cols']} and {flags['label_col']}.")
    if fmt == "jsonl":
        return text_cols, label_col
    # Delimited records are lists: turn names into positions once.
    index = {}
    for i, c in enumerate(columns):
        index.setdefault(c, i)
    return [(c, index[c]) for c in text_cols], None if label_col is None else (label_col, index[label_col])


def _id_column(columns, text_cols, label_col, fmt):
    used = {c if isinstance(c, str) else c[0] for c in [*text_cols, label_col] if c is not None}
    name = next((c for c in ID_COLUMN_CANDIDATES if c in columns and c not in used), None)
    if name is None or fmt == "jsonl":
        return name
    return name, columns.index(name)


def _duplicate_id(rec, id_col, fmt, line: int, seen: dict[str, int]) -> str | None:
    """Record the row's id; a reason when an earlier row already used it (an empty id is not checked)."""
    value = rec.get(id_col) if fmt == "jsonl" else rec[id_col[1]]
    if value is None or isinstance(value, (dict, list)):
        return None
    key = str(value).strip()
    if not key:
        return None
    if key in seen:
        name = id_col if fmt == "jsonl" else id_col[0]
        return f"duplicated id '{key}' in column '{name}' (first used on line {seen[key]}); each row needs its own id"
    seen[key] = line
    return None


def _row_texts(rec, text_cols, fmt) -> tuple[list[str], str | None]:
    out = []
    for col in text_cols:
        if fmt == "jsonl":
            if col not in rec:
                return out, f"missing key '{col}'"
            value, name = rec[col], col
            if not isinstance(value, str):
                return out, f"text in '{col}' must be a string, found {_json_type(value)}"
        else:
            name, i = col
            value = rec[i]
        value = value.strip()
        if not value:
            return out, f"empty text in column '{name}'"
        out.append(value)
    return out, None


def _cell_label(rec, label_col, fmt) -> tuple[str | None, str | None]:
    """The label cell as a stripped string (None when empty or absent), or an error reason."""
    if fmt != "jsonl":
        value = rec[label_col[1]].strip()
        return (value or None), None
    value = rec.get(label_col)
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, (int, float)):
        return repr(value), None
    if isinstance(value, str):
        return (value.strip() or None), None
    return None, f"label in '{label_col}' must be a string or a number, found {_json_type(value)}"


# --------------------------------------------------------------------------------------------------- labels


def _as_int(text: str) -> int | None:
    try:
        return int(text) if "_" not in text else None
    except ValueError:
        return None


def _as_float(text: str) -> float | None:
    try:
        return float(text) if "_" not in text else None
    except ValueError:
        return None


def _infer_task(raw_labels: list[str]) -> str:
    """Regression when most labels are numbers and some finite one is not written as an integer ("3.800")."""
    counts: dict[str, int] = {}
    for v in raw_labels:
        counts[v] = counts.get(v, 0) + 1
    numeric, fractional = 0, False
    for value, n in counts.items():
        x = _as_float(value)
        if x is None:
            continue
        numeric += n
        if _as_int(value) is None and math.isfinite(x):
            fractional = True
    return "regression" if fractional and numeric * 2 > len(raw_labels) else "classification"


def _regression_targets(raw_labels, lines, label_name):
    cache: dict[str, tuple[float, str | None]] = {}
    labels, bad = [], []
    for value, line in zip(raw_labels, lines):
        if value not in cache:
            x = _as_float(value)
            if x is None:
                cache[value] = (0.0, f"regression target '{value}' in column '{label_name}' is not a number")
            elif not math.isfinite(x):
                cache[value] = (0.0, f"regression target '{value}' is not finite (NaN or infinity)")
            else:
                cache[value] = (x, None)
        x, reason = cache[value]
        labels.append(x)
        if reason is not None:
            bad.append((line, reason))
    return labels, bad


def _class_ids(raw_labels, lines, label_names):
    if label_names is None:
        distinct = set(raw_labels)
        ints = {v: _as_int(v) for v in distinct}
        floats = {v: _as_float(v) for v in distinct}
        if all(i is not None for i in ints.values()):
            # "0", "1" -> ids 0, 1; "01" and "1" are the same class.
            label_names = [str(i) for i in sorted(set(ints.values()))]
            ids = {name: k for k, name in enumerate(label_names)}
            mapping = {v: ids[str(ints[v])] for v in distinct}
        else:
            if all(f is not None and not math.isnan(f) for f in floats.values()):
                label_names = sorted(distinct, key=lambda v: (floats[v], v))
            else:
                label_names = sorted(distinct)
            mapping = {v: k for k, v in enumerate(label_names)}
        return label_names, [mapping[v] for v in raw_labels], []
    mapping = {name: k for k, name in enumerate(label_names)}
    labels, bad = [], []
    shown = label_names if len(label_names) <= 20 else label_names[:20] + ["..."]
    for value, line in zip(raw_labels, lines):
        k = mapping.get(value)
        if k is None:
            bad.append((line, f"label '{value}' is not in the label set {shown}; fix the label, or pass the full "
                              f"label set (the model's classes, in id order)"))
            k = -1
        labels.append(k)
    return label_names, labels, bad
