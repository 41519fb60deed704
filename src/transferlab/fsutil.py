"""Filesystem helpers that never leave a half-written output looking complete.

Every output directory (tokenizer, corpus, checkpoint, run) is written under a temporary sibling name and
renamed into place only when complete, so a crash leaves ``NAME.tmp-*`` debris, never a partial ``NAME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError

# Names the writers here give to work in progress: NAME.tmp-XXXXXXXX (atomic_dir), .NAME.tmp-PID (write_json),
# NAME.old-PID (a directory being replaced or deleted).
_DEBRIS = re.compile(r"^.+\.(tmp|old)-\w+$")


def check_output_dir(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """Refuse to clobber an existing non-empty directory unless ``overwrite`` is set."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise UserError(
                f"{what} directory '{path}' already exists and is not empty. Choose another path, "
                f"or pass --overwrite to replace it."
            )
    return path


def clear_output_dir(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """``check_output_dir``, then remove the old contents when ``overwrite`` is set: for runs written in place."""
    path = check_output_dir(path, overwrite, what)
    if overwrite and path.exists():
        shutil.rmtree(path)
    return path


def check_output_file(path: str | Path, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set (predictions, plots), and refuse a path whose
    folder does not exist (before any work, not when the result is written)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{option} '{path}' already exists. Choose another path, or pass --overwrite to replace it.")
    if path.is_dir():
        raise UserError(f"{option} '{path}' is a directory; give a file name inside it (e.g. {path / 'out.tsv'}).")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise UserError(f"{option} '{path}': the folder '{parent}' {what}. Create it (mkdir -p {parent}) or choose "
                        f"another path.")
    return path


class ProvisionalDir:
    """An output directory that a run which fails before its first step leaves as it found it.

    Use as a context manager around everything from the first write to the end of the run, and call ``commit()``
    once the run has done work worth keeping (the first training step). Until then, an exception (a bad setting
    found late, a NaN at the first step, Ctrl-C or SIGTERM during start-up) removes what this run added, puts back
    a run that ``replace=True`` was replacing, and removes the directory if the run created it; so the corrected
    command just works. With ``replace``, an existing directory is set aside under a debris name
    (``NAME.old-PID``) and deleted only on commit. ``active=False`` (a non-writing rank) does nothing.
    """

    def __init__(self, path: str | Path, replace: bool = False, active: bool = True, what: str = "the first step"):
        self.path, self.replace, self.active, self.what = Path(path), replace, active, what
        self.committed = False
        self._set_aside: Path | None = None
        self._created: Path | None = None
        self._before: set[str] = set()

    def __enter__(self) -> "ProvisionalDir":
        if not self.active:
            return self
        path = self.path
        if self.replace and path.is_dir() and any(path.iterdir()):
            self._set_aside = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, self._set_aside)
        if not path.exists():
            created = path
            while not created.parent.exists():
                created = created.parent
            self._created = created
        else:
            self._before = {p.name for p in path.iterdir()}
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            self._restore()
            raise
        return self

    def commit(self) -> None:
        """The run has started for real: keep its directory whatever happens next."""
        if self.committed or not self.active:
            return
        self.committed = True
        if self._set_aside is not None:
            shutil.rmtree(self._set_aside, ignore_errors=True)
            self._set_aside = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.active:
            return False
        if exc_type is None:
            self.commit()
            return False
        if not self.committed:
            self._restore()
            if issubclass(exc_type, KeyboardInterrupt):
                import sys

                print(f"\ninterrupted before {self.what}: '{self.path}' is as it was before this command; run "
                      f"the same command again to start.", file=sys.stderr)
        return False

    def _restore(self) -> None:
        path = self.path
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)
        elif path.is_dir():
            for p in path.iterdir():
                if p.name not in self._before:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self._set_aside is not None:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(self._set_aside, path)
            self._set_aside = None


def write_error(path: str | Path, e: OSError) -> UserError:
    """A one-paragraph UserError for an output that could not be written (disk full, read-only, no permission)."""
    reason = e.strerror or str(e)
    return UserError(f"cannot write '{path}': {reason}. Nothing under that name was changed: an earlier complete "
                     f"version, if any, is intact. Free disk space or fix the permissions (or choose another "
                     f"output path), then run the command again.")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block exits without an exception.

    Files and directories are fsynced before the rename, so after a crash or power loss a directory under its
    final name is whole. An ``OSError`` (disk full, read-only file system) becomes a ``UserError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            if not overwrite:
                raise UserError(f"'{path}' already exists; pass --overwrite to replace it.")
            trash = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_tree(path: str | Path) -> None:
    """Delete a directory without it ever looking complete half-way: rename it to a debris name, then delete."""
    path = Path(path)
    trash = path.with_name(f"{path.name}.old-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_debris(directory: str | Path) -> list[Path]:
    """Delete ``NAME.tmp-*`` / ``NAME.old-*`` leftovers of writes or deletes that a crash cut short."""
    directory = Path(directory)
    found = [p for p in directory.iterdir() if _DEBRIS.match(p.name)] if directory.is_dir() else []
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def finite_json(obj):
    """``obj`` with every NaN or infinite float replaced by None: JSON has no NaN, and a file with one in it is not
    JSON that other tools can read."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temp file + rename); NaN and infinities are written as null (valid JSON)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(finite_json(obj), f, indent=2, sort_keys=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' does not exist. Check the path.")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"'{path}' is not valid JSON ({e}). The file may be truncated or corrupted.") from None
    if not isinstance(obj, dict):
        raise UserError(f"'{path}' holds a JSON {type(obj).__name__}, not an object; the file is corrupted or "
                        f"not the one expected here.")
    return obj


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (temp file + rename): readers never see half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
