"""Streaming readers for raw text corpora (.txt, .jsonl, optionally gzipped).

A corpus is a list of files or directories. Each file holds documents; a document is a list of paragraphs:

- ``.txt`` / ``.txt.gz``: every non-blank line is a paragraph. A run of two or more blank lines ends a document,
  and so does the end of the file. A Wikipedia shard whose articles are separated by ``"\\n\\n\\n"`` therefore
  gives one document per article, and a book with single blank lines between paragraphs is one document.
- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line whose string field ``"text"`` is one document; its
  non-blank lines are the paragraphs. Blank lines between records are ignored.

Files are read line by line and decoded one line at a time, so memory does not grow with file size and a
decoding error can name its line. A UTF-8 byte-order mark at the start of a file is ignored.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import UserError

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")

_BOM = b"\xef\xbb\xbf"
# How often (in lines) the position callback fires inside a long document.
_PROGRESS_EVERY_LINES = 4096


def has_text_suffix(path: str | Path) -> bool:
    """True if ``path`` ends with one of :data:`TEXT_SUFFIXES` (case-insensitive)."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in TEXT_SUFFIXES)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Resolve corpus inputs into the list of text files to read.

    Files are taken as given (they must have a supported suffix); directories are walked recursively for
    files with a supported suffix, in sorted order, skipping hidden files and folders. Input order is kept and
    a file named twice is read once.

    Args:
        inputs: files and/or directories.

    Returns:
        The files, in reading order.

    Raises:
        UserError: a path does not exist, a file has an unsupported suffix, or a directory (or the whole
            input list) holds no text file.
    """
    supported = ", ".join(TEXT_SUFFIXES)
    files: list[Path] = []
    inputs = list(inputs)
    if not inputs:
        raise UserError(f"No corpus input was given. Pass one or more text files or directories ({supported}).")
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise UserError(f"Corpus input '{path}' does not exist. Check the path.")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and has_text_suffix(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(
                    f"Corpus directory '{path}' holds no text files. transferlab reads files ending in "
                    f"{supported}; rename the files or point at the folder that holds them."
                )
            files.extend(found)
        elif has_text_suffix(path):
            files.append(path)
        else:
            raise UserError(
                f"Corpus input '{path}' has an unsupported file type. transferlab reads {supported} "
                f"(one paragraph per line, documents separated by two blank lines; or JSON lines with a "
                f"\"text\" field). Convert the file or rename it if it already is one of these."
            )
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def iter_paragraphs(path: str | Path, on_position: Callable[[int], None] | None = None) -> Iterator[str | None]:
    """Stream one file as paragraphs, with ``None`` marking the end of each document.

    This is the memory-bounded form of :func:`iter_documents`: a document is never held whole, so even a
    single-document file of many gigabytes streams in constant memory (one line at a time).

    Args:
        path: a file with a supported suffix.
        on_position: called with the byte offset reached in the file *on disk* (the compressed offset for
            ``.gz``) after each document and every few thousand lines; for progress bars.

    Yields:
        Paragraph strings (never empty), and ``None`` after the last paragraph of each document. Documents
        without paragraphs are not reported.
    """
    path = Path(path)
    if path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_paragraphs(path, on_position)
    else:
        yield from _txt_paragraphs(path, on_position)


def iter_documents(path: str | Path) -> Iterator[list[str]]:
    """Yield each document of a file as its list of paragraphs (see the module docstring for the rules)."""
    doc: list[str] = []
    for paragraph in iter_paragraphs(path):
        if paragraph is None:
            yield doc
            doc = []
        else:
            doc.append(paragraph)


def iter_paragraph_batches(paths: Iterable[str | Path], batch_lines: int = 2000) -> Iterator[list[str]]:
    """Yield the paragraphs of many files in lists of up to ``batch_lines``, ignoring document boundaries.

    This is the shape tokenizer training wants: large batches keep the Rust side busy.
    """
    batch: list[str] = []
    for path in paths:
        for paragraph in iter_paragraphs(path):
            if paragraph is not None:
                batch.append(paragraph)
                if len(batch) >= batch_lines:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _txt_paragraphs(path: Path, on_position) -> Iterator[str | None]:
    blank_run = 0
    in_doc = False
    for lineno, line, position in _decoded_lines(path):
        if line.strip():
            if in_doc and blank_run >= 2:
                yield None
                if on_position is not None:
                    on_position(position)
            in_doc = True
            blank_run = 0
            yield line
        else:
            blank_run += 1
        if on_position is not None and lineno % _PROGRESS_EVERY_LINES == 0:
            on_position(position)
    if in_doc:
        yield None
    if on_position is not None:
        on_position(path.stat().st_size)


def _jsonl_paragraphs(path: Path, on_position) -> Iterator[str | None]:
    for lineno, line, position in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}). Each line of a .jsonl file "
                f"must be one JSON object such as {{\"text\": \"...\"}}; fix or remove this line."
            ) from None
        if not isinstance(record, dict) or "text" not in record:
            raise UserError(
                f"{path}:{lineno}: the record has no \"text\" field. Each line of a .jsonl corpus must be a "
                f"JSON object with the document in \"text\", e.g. {{\"text\": \"First paragraph.\\nSecond.\"}}."
            )
        text = record["text"]
        if not isinstance(text, str):
            raise UserError(
                f"{path}:{lineno}: \"text\" is a {type(text).__name__}, not a string. Store the document "
                f"as one string, with paragraphs separated by newlines."
            )
        paragraphs = [p for p in text.splitlines() if p.strip()]
        if paragraphs:
            yield from paragraphs
            yield None
        if on_position is not None:
            on_position(position)
    if on_position is not None:
        on_position(path.stat().st_size)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """Yield ``(line number, line without its newline, on-disk byte offset)`` for a text or gzip file."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise UserError(f"Cannot open corpus file '{path}': {e.strerror}. Check the path and its permissions.")
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.lower().endswith(".gz") else raw
        lineno = 0
        try:
            for data in stream:
                lineno += 1
                if lineno == 1 and data.startswith(_BOM):
                    data = data[len(_BOM):]
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{path}:{lineno}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {e.start + 1}). "
                        f"transferlab reads UTF-8 text; re-encode the file, e.g. "
                        f"`iconv -f latin1 -t utf-8 in.txt > out.txt`."
                    ) from None
                yield lineno, line.rstrip("\r\n"), raw.tell()
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise UserError(
                f"{path}: the gzip data is corrupt or truncated after line {lineno} ({e}). Re-create or "
                f"re-download the file; `gzip -t {path}` checks it."
            ) from None
