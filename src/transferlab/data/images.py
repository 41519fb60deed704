"""Labeled images read from disk into one uint8 array: MNIST idx files, MedMNIST ``.npz``, class folders, CSVs.

Every reader returns an ``ImageSet``: (N, H, W, C) uint8 pixels (C = 1 for grayscale, 3 for RGB), int64 class ids
and the class names. It duck-types the text ``LabeledSet`` (``data/labeled.py``) so label budgets, compare grids and
the Keras-style facade treat both alike.

Image files (a class-folder tree or a CSV of paths) are decoded once, at read time, into that one array: a training
loop then indexes rows instead of decoding a file per example per epoch. An array larger than ``MEMMAP_BYTES`` is
decoded into an ``.npy`` file in a cache directory and returned memory-mapped, so a data set larger than memory
still works and a second read of the same files skips decoding. The cache file is named by a hash of the files'
resolved paths, sizes and modification times and of ``resize`` (the channel and bit-depth decisions follow from
those files, and ``_CACHE_VERSION`` covers the rules that make them); it is written under a temporary name and
renamed when complete, so a killed decode never leaves a file that passes for a finished cache.

``path`` may name:

- MNIST idx: a directory with ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]`` (``t10k-`` for the
  test split), or an images idx file itself (its labels file is found beside it by name);
- a MedMNIST ``.npz`` with ``{split}_images`` / ``{split}_labels`` (or a directory holding exactly one ``.npz``);
- a CSV with a header row naming a path column and a label column (or a directory holding ``{split}.csv``);
- a folder tree ``root/<class>/<image>`` (torchvision's ImageFolder layout), or ``root/<split>/<class>/<image>``.

A directory is tried in that order. "dev", "validation" and "valid" name the "val" split everywhere.

idx and ``.npz`` arrays are read into memory as they are (an uncompressed idx file larger than ``MEMMAP_BYTES`` is
memory-mapped where it lies); only resizing them goes through the cache.

Resizing (``resize=(H, W)``) uses Pillow's bilinear filter for every format, arrays included (one image at a
time), so a folder of PNGs and the same images in an ``.npz`` give the same pixels.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import UserError

MEMMAP_BYTES = 256 * 2**20  # decoded arrays above this go to a memory-mapped cache file instead of memory
PROGRESS_MIN_FILES = 2000  # decoding more files than this shows a progress bar
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
PATH_COLUMN_CANDIDATES = ("path", "file", "filename", "image", "image_path")
LABEL_COLUMN_CANDIDATES = ("label", "class", "target", "y")
SPLIT_ALIASES = {"dev": "val", "validation": "val", "valid": "val"}

# Bump when a decoding rule changes (mode conversion, 16-bit scaling, resizing), so old caches stop matching.
_CACHE_VERSION = 1
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}
_IDX_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
_IDX_IMAGES = re.compile(r"^(?P<prefix>.+?)[-.]images[-.]idx3[-.]ubyte(?P<gz>\.gz)?$", re.IGNORECASE)
_IDX_LABELS = re.compile(r"[-.]labels[-.]idx1[-.]ubyte(\.gz)?$", re.IGNORECASE)
_IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: ubyte, 3 dims; 0x0801: ubyte, 1 dim
_GRAY_MODES = ("1", "L", "LA", "I", "F")  # plus every "I;16*" variant


@dataclass(eq=False)  # arrays make field-wise equality meaningless; sets compare by identity
class ImageSet:
    """Images read from one source, with their labels.

    ``images`` is (N, H, W, C) uint8 with C = 1 (grayscale) or 3 (RGB), possibly a read-only ``np.memmap``;
    ``labels`` holds (N,) int64 class ids into ``label_names``, or is None when the data has no labels. ``names[i]``
    identifies image ``i`` in messages (its file, or ``file.npz:train[17]``). ``skipped`` has ``LabeledSet``'s
    meaning (dropped rows as ``(line, reason)``); the image readers refuse bad input instead, so it stays empty.
    """

    images: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    source: str
    names: list[str] = field(repr=False)
    task: str = "classification"
    skipped: list = field(default_factory=list)
    # 1-based position of each image in its source (the row's line for a CSV); None means 1..N.
    positions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        shape = getattr(self.images, "shape", ())
        if len(shape) != 4 or shape[3] not in (1, 3) or self.images.dtype != np.uint8:
            raise UserError(f"{self.source}: an ImageSet holds uint8 images shaped (N, H, W, C) with C = 1 or 3, "
                            f"got {getattr(self.images, 'dtype', type(self.images).__name__)} {shape}. Build it "
                            f"with ImageSet.from_arrays, which converts what it can.")
        n = shape[0]
        if self.labels is not None and len(self.labels) != n or len(self.names) != n:
            raise UserError(f"{self.source}: {n} images but {len(self.names)} names and "
                            f"{'no' if self.labels is None else len(self.labels)} labels; they must match.")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        h, w = self.size
        kind = "memmap" if isinstance(self.images, np.memmap) else "in memory"
        classes = "unlabeled" if self.labels is None else f"{self.num_labels} classes"
        return f"ImageSet({len(self)} images {h}x{w}x{self.channels} {kind}, {classes}, source={self.source!r})"

    @property
    def num_labels(self) -> int | None:
        """Number of classes (None if unknown)."""
        return None if self.label_names is None else len(self.label_names)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def channels(self) -> int:
        """1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[3])

    @property
    def lines(self) -> list[int]:
        """1-based position of each image in its source (for a CSV, the line of its row), as ``LabeledSet.lines``;
        a subset keeps the positions its images had in the full set."""
        if self.positions is None:
            return list(range(1, len(self) + 1))
        return [int(p) for p in self.positions]

    def subset(self, indices: Iterable[int]) -> "ImageSet":
        """The images at ``indices`` (any iterable of ints or a numpy array), in that order, copied into memory."""
        if not isinstance(indices, np.ndarray):
            indices = [int(i) for i in indices]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise UserError(f"{self.source}: subset index out of range for {n} images "
                            f"(got {int(idx.min())}..{int(idx.max())}).")
        positions = np.arange(1, n + 1, dtype=np.int64) if self.positions is None else np.asarray(self.positions)
        return ImageSet(
            images=np.array(self.images[idx]),  # fancy indexing reads only these rows; np.array drops memmap-ness
            labels=None if self.labels is None else np.asarray(self.labels)[idx].astype(np.int64),
            label_names=None if self.label_names is None else list(self.label_names),
            source=self.source,
            names=[self.names[i] for i in idx],
            task=self.task,
            skipped=list(self.skipped),
            positions=positions[idx],
        )

    @classmethod
    def from_arrays(cls, x, y=None, label_names: Sequence[str] | None = None,
                    source: str = "<in-memory>") -> "ImageSet":
        """An image set from arrays (what a user passes to ``fit``).

        Args:
            x: (N, H, W) or (N, H, W, C) with C = 1 or 3, channels last. uint8 is kept as it is (no copy); other
                integer arrays must hold 0..255; float arrays must hold values in [0, 1] and are scaled to uint8
                (``round(x * 255)``). Anything else (negative, above 1 for floats, NaN, another rank) is refused.
            y: class ids (any sequence of ints, length N), or None for unlabeled images.
            label_names: class names in id order; None names the classes "0".."max(y)".
            source: what messages call this data.
        Returns:
            an ``ImageSet`` whose ``names`` are ``source[i]``.
        """
        images = _as_uint8_images(np.asarray(x), source, "x")
        n = len(images)
        names = None if label_names is None else _check_label_names(label_names, source)
        labels = None
        if y is not None:
            labels = _as_class_ids(y, n, source)
            top = int(labels.max())
            if names is None:
                names = [str(i) for i in range(top + 1)]
            elif top >= len(names):
                raise UserError(f"{source}: label {top} is outside the {len(names)} label names {names}; labels "
                                f"are ids 0..{len(names) - 1} into label_names.")
        return cls(images, labels, names, source, [f"{source}[{i}]" for i in range(n)])


def read_images(
    path: str | Path,
    split: str = "train",
    *,
    label_names: Sequence[str] | None = None,
    require_labels: bool = True,
    resize: tuple[int, int] | int | None = None,
    cache_dir: str | Path | None = None,
    path_col: str | None = None,
    label_col: str | None = None,
) -> ImageSet:
    """Read labeled images from an idx directory/file, an ``.npz``, a class-folder tree or a CSV.

    Args:
        path: what to read (see the module docstring for the layouts).
        split: "train", "val" (or "dev", "validation", "valid") or "test": picks the idx prefix (``t10k`` for
            test), the ``.npz`` keys, the split sub-folder of a folder tree, or ``{split}.csv`` in a directory.
        label_names: the classes in id order (e.g. the training split's); any other label is an error. None
            uses the classes found, sorted (numerically when they are all integers; folder names alphabetically).
        require_labels: when False, data without labels (no labels file, key or column; a flat folder of
            images) gives ``labels=None`` instead of an error.
        resize: (H, W) (or one int for a square) to resize every image to, bilinearly; needed when sizes differ.
        cache_dir: where arrays over ``MEMMAP_BYTES`` are decoded to; default ``$TRANSFERLAB_CACHE/images``, else
            ``~/.cache/transferlab/images``.
        path_col, label_col: the CSV's path and label columns; None picks them from ``PATH_COLUMN_CANDIDATES`` /
            ``LABEL_COLUMN_CANDIDATES``.
    Returns:
        an ``ImageSet``.
    """
    path = Path(path)
    split = _canonical_split(split)
    resize = _check_resize(resize)
    if label_names is not None:
        label_names = _check_label_names(label_names, str(path))
    if not path.exists():
        raise UserError(f"'{path}' does not exist. Pass an MNIST idx directory or images file, a .npz file, a CSV "
                        f"of image paths and labels, or a folder with one sub-folder of images per class.")
    opts = dict(label_names=label_names, require_labels=require_labels, resize=resize, cache_dir=cache_dir)
    kind, target = _detect(path, split)
    if kind == "idx":
        return _read_idx(target, **opts)
    if kind == "npz":
        return _read_npz(target, split, **opts)
    if kind == "csv":
        return _read_csv(target, path_col=path_col, label_col=label_col, **opts)
    return _read_folder(target, split, **opts)


# --------------------------------------------------------------------------------------------------- dispatch


def has_split(path: str | Path, split: str) -> bool:
    """Whether ``path`` holds images for ``split`` (decoding nothing): an idx file with that prefix, the ``.npz``
    key, the split's CSV or sub-folder. A single file (idx, CSV) is one split whatever its name."""
    path = Path(path)
    split = _canonical_split(split)
    if not path.exists():
        return False
    try:
        kind, target = _detect(path, split)
    except UserError:
        return False
    if kind == "npz":
        with np.load(target, allow_pickle=False) as data:
            return f"{split}_images" in data.files
    if kind == "folder":
        return any((path / name).is_dir() for name in _SPLIT_FOLDERS.get(split, (split,)))
    return path.is_dir() or split == "train"


def _canonical_split(split: str) -> str:
    if not isinstance(split, str) or not split.strip():
        raise UserError(f"split must be a name such as 'train', 'val' or 'test', got {split!r}.")
    split = split.strip().lower()
    return SPLIT_ALIASES.get(split, split)


def _detect(path: Path, split: str) -> tuple[str, Path]:
    """Which reader handles ``path``, and the file or folder it should read."""
    if path.is_file():
        name = path.name.lower()
        if _IDX_IMAGES.match(path.name):
            return "idx", path
        if _IDX_LABELS.search(path.name):
            raise UserError(f"'{path}' is an idx labels file. Pass its images file (…-images-idx3-ubyte) or the "
                            f"directory holding both; the labels file is found beside it.")
        if name.endswith(".npz"):
            return "npz", path
        if name.endswith(".csv"):
            return "csv", path
        if name.endswith(IMAGE_EXTENSIONS):
            raise UserError(f"'{path}' is a single image. Pass a folder with one sub-folder of images per class "
                            f"(root/<class>/<image>), or a CSV listing image paths and labels.")
        raise UserError(f"cannot tell how to read '{path}': image data is an MNIST idx file "
                        f"(…-images-idx3-ubyte[.gz]), a .npz, a .csv, or a directory. Rename the file or pass the "
                        f"directory that holds it.")
    files = sorted(p for p in path.iterdir() if p.is_file())
    idx = [p for p in files if _IDX_IMAGES.match(p.name)]
    if idx:
        prefixes = _IDX_PREFIXES.get(split)
        chosen = [p for p in idx if prefixes and _IDX_IMAGES.match(p.name)["prefix"].lower() in prefixes]
        if not chosen:
            present = ", ".join(p.name for p in idx)
            if prefixes is None:
                hint = "MNIST-style data has only train and test splits; take a validation set out of train."
            else:
                hint = f"Expected {' or '.join(f'{x}-images-idx3-ubyte[.gz]' for x in prefixes)} there."
            raise UserError(f"'{path}' holds MNIST idx files ({present}) but none for split '{split}'. {hint}")
        # Prefer the plain file when both it and its .gz are present: no decompression needed.
        return "idx", sorted(chosen, key=lambda p: p.name.lower().endswith(".gz"))[0]
    npz = [p for p in files if p.name.lower().endswith(".npz")]
    if len(npz) == 1:
        return "npz", npz[0]
    if len(npz) > 1:
        listed = ", ".join(p.name for p in npz)
        raise UserError(f"'{path}' holds several .npz files ({listed}). Pass the one you mean.")
    for name in _SPLIT_FOLDERS.get(split, (split,)):
        csv_path = path / f"{name}.csv"
        if csv_path.is_file():
            return "csv", csv_path
    return "folder", path


def _check_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        resize = (resize, resize)
    try:
        h, w = (int(v) for v in resize)
        ok = all(float(v) == int(v) for v in resize) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"resize (--image-size) must be two positive whole numbers (height, width), or one for a "
                        f"square, got {resize!r}.")
    return h, w


def _check_label_names(label_names, source: str) -> list[str]:
    names = [str(n) for n in label_names]
    if not names or len(set(names)) != len(names):
        raise UserError(f"the label names {names} given for '{source}' must be non-empty with no duplicates. "
                        f"Pass each class name once, in id order.")
    return names


def _shown(names: list[str]) -> str:
    return str(names if len(names) <= 20 else names[:20] + ["..."])


# --------------------------------------------------------------------------------------------------- arrays


def _as_uint8_images(x: np.ndarray, source: str, what: str) -> np.ndarray:
    """``x`` as (N, H, W, C) uint8, or a UserError naming ``source`` / ``what`` and the expected shape/range."""
    expect = "(N, H, W) or (N, H, W, C) with C = 1 (grayscale) or 3 (RGB), channels last"
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W, 1)
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        hint = ""
        if x.ndim == 4 and x.shape[1] in (1, 3):
            hint = " It looks channels-first: pass x.transpose(0, 2, 3, 1)."
        raise UserError(f"{source}: {what} has shape {x.shape}; images must be {expect}.{hint}")
    if len(x) == 0 or min(x.shape[1:3]) < 1:
        raise UserError(f"{source}: {what} holds no images (shape {x.shape}). Check that you passed the right data.")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise UserError(f"{source}: {what} is {x.dtype} with values {lo}..{hi}; integer pixels must be 0..255. "
                            f"Rescale them, or pass floats in [0, 1].")
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise UserError(f"{source}: {what} contains NaN or infinite values; float pixels must be finite and in "
                            f"[0, 1].")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise UserError(f"{source}: {what} holds floats from {lo:g} to {hi:g}; float pixels must be in [0, 1] "
                            f"(they are scaled to 0..255). Divide 0..255 pixels by 255, or pass uint8.")
        return np.rint(x * 255).astype(np.uint8)
    raise UserError(f"{source}: {what} has dtype {x.dtype}; images must be uint8 (0..255) or floats in [0, 1].")


def _as_class_ids(y, n: int, source: str) -> np.ndarray:
    """``y`` (from_arrays) as (N,) int64 non-negative ids."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (N, 1) -> (N,), MedMNIST's layout
    if y.ndim != 1:
        raise UserError(f"{source}: labels y have shape {y.shape}; pass one class id per image, shape ({n},).")
    if len(y) != n:
        raise UserError(f"{source}: {n} images but {len(y)} labels; pass one label per image.")
    if n and (y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))))):
        raise UserError(f"{source}: labels y must be whole-number class ids (got dtype {y.dtype}). Map class names "
                        f"to ids 0..K-1 and pass label_names.")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise UserError(f"{source}: label {int(y.min())} is negative; class ids run from 0.")
    return y


def _int_labels(values: np.ndarray, label_names: list[str] | None, source: str, what: str):
    """Integer label values (idx, npz) as ids into ``label_names`` (given, or the distinct values sorted)."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values) & (values == np.round(values))):
            raise UserError(f"'{source}': {what} holds non-integer labels; image labels must be class ids.")
    elif values.dtype.kind not in "iub":
        raise UserError(f"'{source}': {what} has dtype {values.dtype}; expected integer class ids.")
    values = values.astype(np.int64)
    distinct, inverse = np.unique(values, return_inverse=True)
    if label_names is None:
        return inverse.astype(np.int64).reshape(-1), [str(int(v)) for v in distinct]
    index = {name: k for k, name in enumerate(label_names)}
    unknown = [int(v) for v in distinct if str(int(v)) not in index]
    if unknown:
        first = int(np.flatnonzero(values == unknown[0])[0])
        raise UserError(f"'{source}': label {unknown[0]} in {what} (first at index {first}) is not among the known "
                        f"classes {_shown(label_names)}. Pass the full label set (the model's classes, in id "
                        f"order), or fix the data.")
    lut = np.array([index[str(int(v))] for v in distinct], dtype=np.int64)
    return lut[inverse].reshape(-1), list(label_names)


def _resized(images: np.ndarray, resize, key_parts: list, cache_dir, source: str) -> np.ndarray:
    """``images`` resized to ``resize`` one by one with Pillow's bilinear filter (no-op when the size matches)."""
    if resize is None or tuple(images.shape[1:3]) == resize:
        return images
    Image = _pil()
    h, w = resize
    c = images.shape[3]

    def fill(out: np.ndarray) -> None:
        for i in _progress(range(len(images)), len(images), "resizing"):
            im = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i])
            out[i] = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, c)

    return _materialize(_cache_key(key_parts + [["resize", h, w]]), (len(images), h, w, c), fill, cache_dir, source)


# --------------------------------------------------------------------------------------------------- MNIST idx


def _read_idx(images_path: Path, *, label_names, require_labels, resize, cache_dir) -> ImageSet:
    labels_path = _idx_labels_beside(images_path)
    if labels_path is None and require_labels:
        m = _IDX_IMAGES.match(images_path.name)
        raise UserError(f"no labels file beside '{images_path}' (looked for {m['prefix']}-labels-idx1-ubyte and "
                        f"{m['prefix']}-labels-idx1-ubyte.gz in '{images_path.parent}'). Put it there, or read "
                        f"without labels (require_labels=False).")
    header, images = _read_idx_file(images_path, "images")
    n, rows, cols = header
    images = images.reshape(n, rows, cols, 1)  # (N, H, W, 1)
    labels = names = None
    if labels_path is not None:
        (n_labels,), raw = _read_idx_file(labels_path, "labels")
        if n_labels != n:
            raise UserError(f"'{images_path}' holds {n} images but '{labels_path}' holds {n_labels} labels; they "
                            f"must come from the same split. Check the file names.")
        labels, names = _int_labels(raw, label_names, str(labels_path), "the labels")
    key = [_file_identity(images_path)]
    images = _resized(images, resize, key, cache_dir, str(images_path))
    return ImageSet(images, labels, names, str(images_path), [f"{images_path.name}[{i}]" for i in range(n)])


def _idx_labels_beside(images_path: Path) -> Path | None:
    m = _IDX_IMAGES.match(images_path.name)
    stem = images_path.name[: m.end("prefix")]
    rest = images_path.name[m.end("prefix"):]
    # Keep the writer's separators and case: train-images-idx3-ubyte -> train-labels-idx1-ubyte.
    base = stem + re.sub("idx3", "idx1", re.sub("images", "labels", rest, flags=re.I), flags=re.I)
    base = base[:-3] if base.lower().endswith(".gz") else base
    for name in (base, base + ".gz"):
        if (images_path.parent / name).is_file():
            return images_path.parent / name
    return None


def _read_idx_file(path: Path, kind: str) -> tuple[tuple[int, ...], np.ndarray]:
    """The header numbers and the flat uint8 data of an idx file, checked against each other."""
    import gzip
    import zlib

    dims = 3 if kind == "images" else 1
    header_bytes = 4 * (1 + dims)
    expected_magic = _IDX_MAGIC[kind]
    gz = path.name.lower().endswith(".gz")
    fix = "Re-download the file (a download cut short leaves a truncated file)."
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(header_bytes)
            if len(head) < header_bytes:
                raise UserError(f"'{path}' is truncated: its idx header needs {header_bytes} bytes, the file has "
                                f"{len(head)}. {fix}")
            magic, *shape = (int(v) for v in np.frombuffer(head, dtype=">i4"))
            if magic != expected_magic:
                other = next((k for k, v in _IDX_MAGIC.items() if v == magic and k != kind), None)
                what = f"an idx {other} file" if other else "not an idx file (or a corrupt one)"
                raise UserError(f"'{path}' starts with magic number {magic}, expected {expected_magic} for idx "
                                f"{kind}: it is {what}. Check which file you passed. {fix if not other else ''}")
            if min(shape) < 0 or (kind == "images" and min(shape) == 0):
                raise UserError(f"'{path}' has an impossible idx header {shape}; the file is corrupt. {fix}")
            count = int(np.prod(shape))
            if not gz and count > MEMMAP_BYTES:
                # Large uncompressed data is mapped straight from the file: the idx layout is already the array's.
                size = path.stat().st_size
                if size != header_bytes + count:
                    raise _idx_length_error(path, shape, count, size - header_bytes, fix)
                return tuple(shape), np.memmap(path, dtype=np.uint8, mode="r", offset=header_bytes, shape=(count,))
            data = np.empty(count, dtype=np.uint8)
            got = _read_into(f, data)
            extra = len(f.read(1)) if got == count else 0
            if got != count or extra:
                raise _idx_length_error(path, shape, count, got + extra, fix)
    except UserError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read '{path}': {e}. The file is damaged{' or not gzip' if gz else ''}. "
                        f"{fix}") from None
    return tuple(shape), data


def _idx_length_error(path, shape, count, got, fix) -> UserError:
    more = "more" if got > count else "only"
    return UserError(f"'{path}': the idx header says {' x '.join(map(str, shape))} = {count} bytes of data, but "
                     f"the file holds {more} {got}{'+' if got > count else ''}. {fix}")


def _read_into(f, out: np.ndarray) -> int:
    """Fill ``out`` from ``f`` (a gzip stream may return short reads); the number of bytes read."""
    view = memoryview(out)
    got = 0
    while got < len(out):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


# --------------------------------------------------------------------------------------------------- npz


def _read_npz(path: Path, split: str, *, label_names, require_labels, resize, cache_dir) -> ImageSet:
    import zipfile
    import zlib

    fix = "Re-download it; a MedMNIST file is an .npz (zip) archive of train/val/test arrays."
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise UserError(f"'{path}' is not a readable .npz archive ({e}). {fix}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"'{path}' holds a single array (.npy data), not an .npz archive with {split}_images and "
                        f"{split}_labels. Save the arrays with np.savez(path, {split}_images=..., "
                        f"{split}_labels=...).")
    with data:
        keys = list(data.files)
        image_key, label_key = f"{split}_images", f"{split}_labels"
        if image_key not in keys:
            splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            raise UserError(f"'{path}' has no key '{image_key}' for split '{split}'. Keys present: "
                            f"{', '.join(keys) or '(none)'}. Pick a split among {splits or 'none'}, or save the "
                            f"arrays as {image_key} / {label_key}.")
        if label_key not in keys and require_labels:
            raise UserError(f"'{path}' has '{image_key}' but no '{label_key}'. Keys present: {', '.join(keys)}. "
                            f"Add the labels, or read without labels (require_labels=False).")
        try:
            x = data[image_key]
            y = data[label_key] if label_key in keys else None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
            raise UserError(f"'{path}': cannot read its arrays ({e}); the archive is damaged. {fix}") from None
    images = _as_uint8_images(x, f"'{path}'", image_key)
    labels = names = None
    if y is not None:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # MedMNIST stores (N, 1)
        if y.ndim != 1:
            raise UserError(f"'{path}': {label_key} has shape {y.shape}; expected (N,) or (N, 1) class ids. "
                            f"Multi-label data (one column per label) is not an image classification set.")
        if len(y) != len(images):
            raise UserError(f"'{path}': {image_key} holds {len(images)} images but {label_key} holds {len(y)} "
                            f"labels; they must match.")
        labels, names = _int_labels(y, label_names, str(path), label_key)
    images = _resized(images, resize, [_file_identity(path), split], cache_dir, str(path))
    return ImageSet(images, labels, names, str(path), [f"{path.name}:{split}[{i}]" for i in range(len(images))])


# --------------------------------------------------------------------------------------------------- folder tree


def _read_folder(root: Path, split: str, *, label_names, require_labels, resize, cache_dir) -> ImageSet:
    root = _split_folder(root, split)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = _image_files(root, recursive=False)
    if not subdirs:
        if not loose:
            raise UserError(f"found nothing to read under '{root}': no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"and no class sub-folders. Expected root/<class>/<image>; check the path.")
        if require_labels:
            raise UserError(f"'{root}' holds {len(loose)} images but no class sub-folders, so they have no labels. "
                            f"Put each class's images in a sub-folder named after it (root/<class>/<image>), or "
                            f"read them unlabeled (require_labels=False).")
        images = _decode_files(loose, None, resize, cache_dir, str(root))
        return ImageSet(images, None, label_names, str(root), [str(p) for p in loose])
    if loose:
        print(f"{root}: ignored {len(loose)} image file(s) directly in the folder (not in a class sub-folder).",
              file=sys.stderr)
    names = folder_classes(subdirs, label_names)
    ids = {name: k for k, name in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    for d in subdirs:
        found = _image_files(d, recursive=True)
        if not found:
            raise UserError(f"class folder '{d}' holds no images ({', '.join(IMAGE_EXTENSIONS)}). Remove the "
                            f"folder, or add its images.")
        files += found
        labels += [ids[d.name]] * len(found)
    images = _decode_files(files, None, resize, cache_dir, str(root))
    return ImageSet(images, np.asarray(labels, dtype=np.int64), names, str(root), [str(p) for p in files])


def folder_classes(subdirs: list[Path], label_names: list[str] | None) -> list[str]:
    """The classes of a folder of class sub-folders, in id order: the known ones (a model's), which every
    sub-folder must be among, else the sub-folders' names."""
    if label_names is None:
        return [d.name for d in subdirs]
    for d in subdirs:
        if d.name not in label_names:
            raise UserError(f"class folder '{d}' is not among the known classes {_shown(label_names)} (the "
                            f"model's classes, in id order). Remove or rename the folder, or pass a label set "
                            f"that includes '{d.name}'.")
    return list(label_names)


def _split_folder(root: Path, split: str) -> Path:
    """``root/<split>`` when it exists (aliases included); refuse a root of split folders that lacks this one."""
    for name in _SPLIT_FOLDERS.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    splits = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.lower() in
                    {n for names in _SPLIT_FOLDERS.values() for n in names})
    if splits:
        raise UserError(f"'{root}' holds split folders ({', '.join(splits)}) but none for split '{split}'. Pick "
                        f"one of those splits, or pass the split's folder itself.")
    return root


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder`` by extension (case-insensitive), sorted, hidden files and folders skipped."""
    if not recursive:
        candidates = (p for p in folder.iterdir() if p.is_file())
    else:
        candidates = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            candidates += [Path(dirpath) / f for f in filenames]
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


# --------------------------------------------------------------------------------------------------- CSV


def _read_csv(path: Path, *, path_col, label_col, label_names, require_labels, resize, cache_dir) -> ImageSet:
    files, labels, names, rows = csv_listing(path, path_col, label_col, label_names, require_labels,
                                             PATH_COLUMN_CANDIDATES, "image")
    where = [f"{path}:{row}" for row in rows]
    images = _decode_files(files, where, resize, cache_dir, str(path))
    return ImageSet(images, labels, names, str(path), [str(p) for p in files],
                    positions=np.asarray(rows, dtype=np.int64))


def csv_listing(path: Path, path_col, label_col, label_names, require_labels, path_candidates,
                unit: str) -> tuple[list[Path], np.ndarray | None, list[str] | None, list[int]]:
    """The rows of a CSV that names one file per row (images, audio clips), checked before anything is decoded.

    Args:
        path: the CSV; relative paths in it are relative to its folder.
        path_col, label_col: the columns named by the user, or None to pick from ``path_candidates`` /
            ``LABEL_COLUMN_CANDIDATES``.
        label_names: the known classes in id order (a model's), or None to take them from the labels.
        require_labels: whether a label column must be there.
        unit: what one row is, for messages ("image", "clip").
    Returns:
        (files, class ids or None, label names or None, the line of each row).
    """
    # The text reader's line splitting and CSV record parser: BOM, CRLF, quoted fields and line numbers.
    from .labeled import _class_ids, _csv_records, _decode_lines

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read '{path}': {e.strerror or e}. Check the path and its permissions.") from None
    lines, bad_lines = _decode_lines(raw)
    records = list(_csv_records(lines))
    if not records:
        raise UserError(f"'{path}' is empty. Expected a header row (e.g. path,label) and one row per {unit}.")
    start, _, header = records[0]
    if isinstance(header, str) or start in bad_lines:
        problem = header if isinstance(header, str) else "the line is not valid UTF-8"
        raise UserError(f"{path}:{start}: cannot read the header row: {problem}. Fix the file's first line.")
    columns = [c.strip() for c in header]
    pi = _pick_column(path, columns, path_col, path_candidates, "path_col (--path-col)", required=True)
    li = _pick_column(path, columns, label_col, LABEL_COLUMN_CANDIDATES, "label_col (--label-col)",
                      required=require_labels)
    if li is not None and li == pi:
        raise UserError(f"'{path}': column '{columns[pi]}' is used both for paths and for labels. Pass different "
                        f"path_col (--path-col) and label_col (--label-col).")
    if len(records) == 1:
        raise UserError(f"'{path}' has a header row but no data rows. Check that you passed the right file.")
    files: list[Path] = []
    rows: list[int] = []
    raw_labels: list[str | None] = []
    for start, end, rec in records[1:]:
        where = f"{path}:{start}"
        if any(line in bad_lines for line in range(start, end + 1)):
            raise UserError(f"{where}: the line is not valid UTF-8. Re-save the file as UTF-8.")
        if isinstance(rec, str):
            raise UserError(f"{where}: {rec}.")
        if len(rec) != len(columns):
            raise UserError(f"{where}: expected {len(columns)} comma-separated fields (as the header row) but found "
                            f"{len(rec)}. Quote paths that contain commas.")
        cell = rec[pi].strip()
        if not cell:
            raise UserError(f"{where}: empty path in column '{columns[pi]}'. Fill it in or delete the row.")
        file = Path(cell).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise UserError(f"{where}: {unit} '{cell}' not found (looked for '{file}'; relative paths are relative "
                            f"to the CSV's folder). Fix the path or delete the row.")
        label = rec[li].strip() if li is not None else None
        if label is not None and not label and require_labels:
            raise UserError(f"{where}: empty label in column '{columns[li]}'. Fill it in, or delete the row.")
        files.append(file)
        rows.append(start)
        raw_labels.append(label or None)

    labels = names = None
    if li is not None and all(v is not None for v in raw_labels):
        if label_names is None:
            names, ids, _ = _class_ids(raw_labels, rows, None)
        else:
            index = {name: k for k, name in enumerate(label_names)}
            for value, row in zip(raw_labels, rows):
                if value not in index:
                    raise UserError(f"{path}:{row}: label '{value}' is not among the known classes "
                                    f"{_shown(label_names)} (the model's classes, in id order). Fix the label, or "
                                    f"pass the full label set.")
            names, ids = list(label_names), [index[v] for v in raw_labels]
        labels = np.asarray(ids, dtype=np.int64)
    elif label_names is not None:
        names = list(label_names)
    return files, labels, names, rows


def _pick_column(path: Path, columns: list[str], given: str | None, candidates, option: str, required: bool):
    if given is not None:
        if given in columns:
            return columns.index(given)
        if not required:
            return None
        raise UserError(f"'{path}' has no column '{given}'. Columns: {', '.join(columns)}. Pass {option} with one "
                        f"of those.")
    lowered = [c.lower() for c in columns]
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    if required:
        raise UserError(f"cannot tell which column of '{path}' holds the {option.split('_')[0]}s: none of "
                        f"{', '.join(candidates)} is in its header row ({', '.join(columns)}). Pass {option}.")
    return None


# --------------------------------------------------------------------------------------------------- decoding


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading image files needs Pillow, which is not installed. Install it with "
                        "'pip install pillow' (torchvision depends on it).") from None
    return Image


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _decode_files(files: list[Path], where: list[str] | None, resize, cache_dir, source: str) -> np.ndarray:
    """Decode image files into one (N, H, W, C) uint8 array, in memory or (large) as a memory-mapped cache."""
    where = where or [str(p) for p in files]
    key = _cache_key([_file_identity(p) for p in files] + [["resize", resize]])
    cached = _open_cache(_cache_file(cache_dir, key), len(files))
    if cached is not None:
        return cached

    Image = _pil()
    modes, sizes = [], []
    for p, w in _progress(list(zip(files, where)), len(files), "reading headers"):
        try:
            with Image.open(p) as im:  # lazy: reads the header, not the pixels
                modes.append(im.mode)
                sizes.append(im.size)
        except Exception as e:  # Pillow raises many types for a bad file; all mean "this file"
            raise _decode_error(p, w, e) from None
    gray = [_is_gray(m) for m in modes]
    channels = 1 if all(gray) else 3
    if channels == 3 and any(gray):
        print(f"{source}: {sum(gray)} grayscale and {len(gray) - sum(gray)} colour images; converting all to RGB.",
              file=sys.stderr)
    deep = sum(m == "I" or m.startswith("I;16") for m in modes)
    if deep:
        print(f"{source}: {deep} 16-bit grayscale image(s) scaled to 8 bits (value // 256).", file=sys.stderr)
    if resize is None:
        other = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
        if other is not None:
            (w0, h0), (w1, h1) = sizes[0], sizes[other]
            raise UserError(f"images differ in size: '{where[0]}' is {h0}x{w0} (HxW) but '{where[other]}' is "
                            f"{h1}x{w1}. Pass resize=(H, W) (--image-size H,W on the command line) to resize every "
                            f"image while decoding.")
        h, w = sizes[0][1], sizes[0][0]
    else:
        h, w = resize

    def fill(out: np.ndarray) -> None:
        for i in _progress(range(len(files)), len(files), "decoding images"):
            out[i] = _decode_file(files[i], channels, resize, where[i])

    return _materialize(key, (len(files), h, w, channels), fill, cache_dir, source)


def _decode_file(path: Path, channels: int, resize, where: str) -> np.ndarray:
    """One image file as (H, W, channels) uint8: mode converted, 16-bit scaled, resized bilinearly if asked."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here rather than as garbage pixels
            im = _convert(im, channels, Image)
            if resize is not None and im.size != (resize[1], resize[0]):
                im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im)
    except Exception as e:
        raise _decode_error(path, where, e) from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)  # (H, W, C)


def _convert(im, channels: int, Image):
    if im.mode == "I" or im.mode.startswith("I;16"):
        # 16-bit grayscale (PNG, TIFF): keep the top byte. Mode "I" is how older Pillows open 16-bit PNGs.
        im = Image.fromarray((np.clip(np.asarray(im), 0, 65535) >> 8).astype(np.uint8))
    if channels == 1:
        return im if im.mode == "L" else im.convert("L")  # LA loses its alpha, "1" becomes 0/255
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow wants palette transparency expanded before dropping it
    return im if im.mode == "RGB" else im.convert("RGB")  # alpha is dropped, CMYK and gray converted


def _decode_error(path: Path, where: str, e: Exception) -> UserError:
    at = f" (listed at {where})" if where != str(path) else ""
    return UserError(f"cannot decode image '{path}'{at}: {type(e).__name__}: {e}. The file is corrupt, truncated "
                     f"or not an image; replace it, or delete it{' and its row' if at else ''}.")


def _progress(items, n: int, desc: str):
    if n <= PROGRESS_MIN_FILES:
        return items
    if not sys.stderr.isatty():  # a log file: one line, not carriage-return frames that make it unreadable
        print(f"{desc}: {n:,} files", file=sys.stderr)
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=n, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------------- cache


def _file_identity(path: Path) -> list:
    try:
        st = path.stat()
    except OSError as e:
        raise UserError(f"cannot read '{path}': {e.strerror or e}. Check the path and its permissions.") from None
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _cache_key(parts: list) -> str:
    h = hashlib.sha256(f"transferlab-images-v{_CACHE_VERSION}".encode())
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _cache_file(cache_dir, key: str) -> Path:
    if cache_dir is None:
        env = os.environ.get("TRANSFERLAB_CACHE")
        cache_dir = Path(env) / "images" if env else Path.home() / ".cache" / "transferlab" / "images"
    return Path(cache_dir).expanduser() / f"images-{key}.npy"


def _open_cache(path: Path, n: int) -> np.ndarray | None:
    """The cached array if ``path`` holds a complete one for ``n`` images, else None (it will be rewritten)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != n or arr.shape[3] not in (1, 3):
        return None
    return arr


def _materialize(key: str, shape: tuple[int, ...], fill: Callable[[np.ndarray], None], cache_dir,
                 source: str) -> np.ndarray:
    """An array of ``shape`` filled by ``fill``: in memory, or above ``MEMMAP_BYTES`` a memory-mapped cache file
    written under a temporary name and renamed into place once complete."""
    if int(np.prod(shape)) <= MEMMAP_BYTES:
        out = np.empty(shape, dtype=np.uint8)
        fill(out)
        return out
    final = _cache_file(cache_dir, key)
    cached = _open_cache(final, shape[0])
    if cached is not None and cached.shape == tuple(shape):
        return cached
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))
        if hasattr(os, "posix_fallocate"):
            # Claim the disk space now: a full disk is then an error here, not a SIGBUS half-way through decoding.
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        fill(out)
        out.flush()
        del out
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        gib = int(np.prod(shape)) / 2**30
        raise UserError(f"cannot write the image cache '{final}' ({gib:.1f} GiB decoded from {source}): "
                        f"{e.strerror or e}. Free disk space, or point cache_dir (or $TRANSFERLAB_CACHE) at a "
                        f"writable disk with room.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return np.load(final, mmap_mode="r")
