"""Multi-task data: several tasks' labels over shared or separate inputs, missing labels marked rather than
dropped, and a task sampler that is a pure function of (seed, step).

A ``TaskSource`` is one set of inputs (a ``LabeledSet`` of texts or an ``ImageSet``) and the labels of every task
it carries (``TaskLabels``). GLUE-style tasks come from separate files, one task per source; a file with several
label columns is one source carrying several tasks, where an empty cell or ``?`` means "not labelled" (an image
labelled for pedestrians and cars but not for stop signs). A label is never invented for a missing cell: the
values array holds a placeholder and ``present`` says which cells are real, so the loss can sum over the labels
present only.

Task kinds: ``classification`` (one class per example), ``regression`` (one number) and ``multilabel`` (K binary
labels, one column each, every cell independently present or missing).

Training draws every step's batch from one source (MT-DNN's scheme): ``SourceSampler`` picks it by one of
``SAMPLING`` (proportional to size, uniform, temperature p ∝ n^(1/T), round-robin, or explicit weights). The pick
for step s depends on (seed, s) alone, so every rank of a torchrun world draws the same source at the same step and
a resumed run sees the batches an uninterrupted one would. Within a source, batches walk a seeded permutation per
epoch of that source. ``MultiTaskBatches`` builds the whole global batch and gives each rank its rows, with the
number of present labels per task in the *global* batch, so that the per-task mean over present labels is the
same whether one process or several compute it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

MT_KINDS = ("classification", "regression", "multilabel")
MISSING = ("", "?")  # a label cell holding one of these (after stripping) is "not labelled"
SAMPLING = ("proportional", "uniform", "temperature", "round-robin", "weighted")
_TRUE, _FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")
_BLOCK = 1024  # sampler draws are made this many steps at a time (one generator call per block)


# --------------------------------------------------------------------------------------------------- labels


@dataclass(eq=False)
class TaskLabels:
    """One task's labels over the examples of a source.

    ``values``: classification (N,) int64 class ids, -1 where missing; regression (N,) float32, NaN where missing;
    multilabel (N, K) float32 0/1, NaN where missing. ``label_names``: the classes in id order (classification) or
    the K labels' names (multilabel); None for regression.
    """

    name: str
    kind: str
    values: np.ndarray
    label_names: list[str] | None
    source: str = "<in-memory>"

    def __post_init__(self):
        if self.kind not in MT_KINDS:
            raise UserError(f"task '{self.name}': unknown kind '{self.kind}'; choose one of {', '.join(MT_KINDS)}.")

    @property
    def present(self) -> np.ndarray:
        """Which labels are real: (N,) bool, or (N, K) for multilabel."""
        if self.kind == "classification":
            return self.values >= 0
        return ~np.isnan(self.values)

    @property
    def num_labels(self) -> int:
        """Outputs of the task's head: classes, 1 for regression, K for multilabel."""
        return 1 if self.kind == "regression" else len(self.label_names)

    def __len__(self) -> int:
        return len(self.values)

    def subset(self, idx) -> "TaskLabels":
        return TaskLabels(self.name, self.kind, self.values[np.asarray(idx, dtype=np.int64)], self.label_names,
                          self.source)

    def spec(self) -> dict:
        """The head this task needs, as ``tasks.multitask`` and config.json record it."""
        return {"name": self.name, "kind": self.kind, "num_labels": self.num_labels, "label_names": self.label_names}

    def masked(self, keep: np.ndarray) -> "TaskLabels":
        """The same labels with those where ``keep`` is False marked missing (``keep`` shaped like ``present``)."""
        values = self.values.copy()
        values[~keep] = -1 if self.kind == "classification" else np.nan
        return TaskLabels(self.name, self.kind, values, self.label_names, self.source)


@dataclass(eq=False)
class TaskSource:
    """Inputs read from one place and the labels of each task they carry. ``data`` is a ``LabeledSet`` (text) or an
    ``ImageSet``; its own ``labels`` are not used."""

    data: object
    tasks: dict[str, TaskLabels]

    def __post_init__(self):
        for t in self.tasks.values():
            if len(t) != len(self.data):
                raise UserError(f"{self.name}: task '{t.name}' has {len(t)} labels for {len(self.data)} examples.")

    @property
    def name(self) -> str:
        return self.data.source

    @property
    def modality(self) -> str:
        return "image" if hasattr(self.data, "images") else "text"

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, idx) -> "TaskSource":
        idx = np.asarray(idx, dtype=np.int64)
        return TaskSource(self.data.subset(idx), {n: t.subset(idx) for n, t in self.tasks.items()})

    def complete(self) -> "TaskSource":
        """Only the examples labelled for every task (and every label of a multilabel task): what a pipeline that
        cannot mask must train on."""
        keep = np.ones(len(self), dtype=bool)
        for t in self.tasks.values():
            p = t.present
            keep &= p.all(axis=1) if p.ndim == 2 else p
        return self.subset(np.flatnonzero(keep))


def task_names(sources: list[TaskSource]) -> list[str]:
    """Every task of ``sources``, in order; a name carried by two sources is an error."""
    seen: dict[str, str] = {}
    for s in sources:
        for name in s.tasks:
            if name in seen:
                raise UserError(f"task '{name}' is carried by both {seen[name]} and {s.name}; give every task its "
                                f"own name.")
            seen[name] = s.name
    return list(seen)


# --------------------------------------------------------------------------------------------------- reading


def _table(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(column names, [(line, {column: cell or None})]) of a TSV / CSV / JSONL file, with labeled.py's parsing
    (GLUE's unquoted TSV, BOM, CRLF, line numbers); a row with the wrong number of fields is an error."""
    from .labeled import _check_file, _decode_lines, _gunzip, _parse_delimited, _parse_jsonl

    fmt = _check_file(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read '{path}': {e.strerror or e}. Check the path and its permissions.") from None
    if path.name.lower().endswith(".gz"):
        raw = _gunzip(raw, path)
    lines, bad_lines = _decode_lines(raw)
    if fmt == "jsonl":
        columns, records = _parse_jsonl(lines)
    else:
        columns, records = _parse_delimited(lines, fmt, True, path, bad_lines)
    rows = []
    for start, end, rec in records:
        bad = next((n for n in range(start, end + 1) if n in bad_lines), None)
        if bad is not None:
            raise UserError(f"{path}:{bad}: the line is not valid UTF-8 ({bad_lines[bad]}). Re-save the file as UTF-8.")
        if isinstance(rec, str):
            raise UserError(f"{path}:{start}: {rec}.")
        if fmt == "jsonl":
            rows.append((start, {k: (None if v is None else v if isinstance(v, str) else
                                     ("true" if v is True else "false" if v is False else repr(v)))
                                 for k, v in rec.items()}))
            continue
        if len(rec) != len(columns):
            raise UserError(f"{path}:{start}: expected {len(columns)} fields (as the header row) but found "
                            f"{len(rec)}; a stray {'tab' if fmt == 'tsv' else 'comma'} or a missing cell?")
        rows.append((start, dict(zip(columns, rec))))
    if not rows:
        raise UserError(f"'{path}' has no data rows. Check that you passed the right file.")
    return columns, rows


def _text_columns(path: Path, columns: list[str], text_cols) -> list[str]:
    from .labeled import TEXT_COLUMN_CANDIDATES

    available = ", ".join(columns)
    if text_cols:
        text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols)
        for c in text_cols:
            if c not in columns:
                raise UserError(f"'{path}' has no text column '{c}'. Available columns: {available}.")
        if not 1 <= len(text_cols) <= 2:
            raise UserError(f"text_cols for '{path}' must name one column, or two for sentence pairs.")
        return text_cols
    found = next((list(c) for c in TEXT_COLUMN_CANDIDATES if all(n in columns for n in c)), None)
    if found is None:
        raise UserError(f"cannot tell which column of '{path}' holds the text; available columns: {available}. "
                        f"Name them with text_cols.")
    return found


def _label_column(path: Path, columns: list[str], used: list[str]) -> str:
    from .labeled import LABEL_COLUMN_CANDIDATES

    found = next((c for c in LABEL_COLUMN_CANDIDATES if c in columns and c not in used), None)
    if found is None:
        raise UserError(f"cannot tell which column of '{path}' holds the labels (none of "
                        f"{', '.join(LABEL_COLUMN_CANDIDATES)}); available columns: {', '.join(columns)}. Name it with "
                        f"the task's `column:`.")
    return found


def parse_task(name: str, kind: str, cells: dict[str, list], lines: list[int], source: str,
               label_names: list[str] | None = None) -> TaskLabels:
    """One task's labels from its raw cells (column -> a string or None per row), missing cells marked.

    Args:
        kind: one of ``MT_KINDS``; classification and regression read one column, multilabel one per label.
        label_names: the classes in id order (e.g. the training split's); None takes the sorted set seen.
    Returns:
        ``TaskLabels``; a UserError naming ``source:line`` for a cell that does not fit ``kind``, and for a task
        whose every label is missing.
    """
    from .labeled import _as_float, _as_int, _class_ids, _infer_task, _regression_targets

    if kind not in MT_KINDS:
        raise UserError(f"task '{name}': unknown kind '{kind}'; choose one of {', '.join(MT_KINDS)}.")
    columns = list(cells)
    if kind != "multilabel" and len(columns) != 1:
        raise UserError(f"task '{name}' is {kind}: it reads one label column, got {columns}; a task with one 0/1 "
                        f"column per label is kind multilabel.")
    n = len(lines)

    def missing(v) -> bool:
        return v is None or v.strip() in MISSING

    def all_missing() -> UserError:
        return UserError(f"{source}: every label of task '{name}' (column{'s' if len(columns) > 1 else ''} "
                         f"{', '.join(columns)}) is missing (empty or '?'); a task needs some labelled examples. Fill "
                         f"in labels, fix the column name, or drop the task.")

    if kind == "multilabel":
        values = np.full((n, len(columns)), np.nan, dtype=np.float32)
        for j, col in enumerate(columns):
            for i, v in enumerate(cells[col]):
                if missing(v):
                    continue
                v = v.strip().lower()
                if v not in _TRUE + _FALSE:
                    raise UserError(f"{source}:{lines[i]}: task '{name}' is multilabel, so column '{col}' holds 0 or 1 "
                                    f"per example ('?' or empty: not labelled), found '{v}'. Use kind classification "
                                    f"for a column of class names.")
                values[i, j] = 1.0 if v in _TRUE else 0.0
        if np.isnan(values).all():
            raise all_missing()
        return TaskLabels(name, kind, values, columns, source)

    col = columns[0]
    raw = cells[col]
    present = [i for i, v in enumerate(raw) if not missing(v)]
    if not present:
        raise all_missing()
    texts = [raw[i].strip() for i in present]
    where = [lines[i] for i in present]
    if kind == "regression":
        targets, bad = _regression_targets(texts, where, col)
        if bad:
            raise UserError(f"{source}:{bad[0][0]}: task '{name}' is regression but {bad[0][1]}. Use kind "
                            f"classification if the column holds class names.")
        values = np.full(n, np.nan, dtype=np.float32)
        values[present] = targets
        return TaskLabels(name, kind, values, None, source)
    if label_names is None and _infer_task(texts) == "regression":
        frac = next(t for t in texts if _as_int(t) is None and _as_float(t) is not None)
        raise UserError(f"{source}: task '{name}' is classification but its labels in column '{col}' are fractional "
                        f"numbers ('{frac}' on line {where[texts.index(frac)]}), which look like regression targets. "
                        f"Use kind regression.")
    names, ids, bad = _class_ids(texts, where, label_names)
    if bad:
        raise UserError(f"{source}:{bad[0][0]}: task '{name}': {bad[0][1]}.")
    if label_names is None and len(names) < 2:
        raise UserError(f"{source}: task '{name}' is classification but every labelled example has the class "
                        f"'{names[0]}'; a classifier needs at least two classes. Check the column, or drop the task.")
    values = np.full(n, -1, dtype=np.int64)
    values[present] = ids
    return TaskLabels(name, kind, values, list(names), source)


def read_task_source(path, tasks: list[dict], modality: str = "text", split: str = "train", text_cols=None,
                     path_col: str | None = None, image_size=None, label_names: dict | None = None) -> TaskSource:
    """Read a labeled file (or image set) carrying one or more tasks.

    Args:
        path: text: a TSV / CSV / JSONL file or a GLUE directory (``split`` picks the file); images: a CSV of
            image paths with label columns, or any ``read_images`` source for one classification task.
        tasks: ``{"name", "kind", "columns"}`` dicts; ``columns`` None means the file's label column (``label``,
            ``Quality``, ``score``, ...: GLUE's names).
        text_cols: the text column(s); None detects them (sentence, sentence1/sentence2, ...).
        label_names: task name -> class names in id order (the training split's), for dev and test splits.
    Returns:
        a ``TaskSource``.
    """
    label_names = label_names or {}
    path = Path(path)
    if modality == "image":
        return _read_image_source(path, tasks, split, path_col, image_size, label_names)
    from .labeled import LabeledSet, find_split

    path = find_split(path, split)
    columns, rows = _table(path)
    lines = [line for line, _ in rows]
    cols = _text_columns(path, columns, text_cols)
    texts = [[] for _ in cols]
    for line, row in rows:
        for j, c in enumerate(cols):
            value = (row.get(c) or "").strip()
            if not value:
                raise UserError(f"{path}:{line}: empty text in column '{c}'. Fill it in or delete the row.")
            texts[j].append(value)
    data = LabeledSet(texts[0], texts[1] if len(texts) > 1 else None, None, "classification", None, str(path), lines)
    return TaskSource(data, _parse_tasks(path, columns, rows, tasks, cols, label_names))


def _parse_tasks(path: Path, columns: list[str], rows, tasks: list[dict], used: list[str], label_names: dict):
    lines = [line for line, _ in rows]
    out = {}
    for t in tasks:
        cols = t.get("columns") or [_label_column(path, columns, used)]
        for c in cols:
            if c not in columns:
                raise UserError(f"'{path}' has no column '{c}' (task '{t['name']}'). Available columns: "
                                f"{', '.join(columns)}.")
        cells = {c: [row.get(c) for _, row in rows] for c in cols}
        out[t["name"]] = parse_task(t["name"], t["kind"], cells, lines, str(path), label_names.get(t["name"]))
    return out


def _read_image_source(path: Path, tasks, split, path_col, image_size, label_names) -> TaskSource:
    from .images import _canonical_split, read_images

    csv = path if path.suffix.lower() == ".csv" else path / f"{_canonical_split(split)}.csv"
    labelled_columns = any(t.get("columns") for t in tasks)
    if not csv.is_file() or not labelled_columns:
        if len(tasks) != 1 or tasks[0]["kind"] != "classification" or labelled_columns:
            raise UserError(f"'{path}': several image tasks, or regression and multilabel ones, read their labels from "
                            f"columns of a CSV of image paths (path,task_a,task_b,... with '?' for a missing label); "
                            f"an idx, .npz or class-folder source carries one classification task.")
        t = tasks[0]
        data = read_images(path, split, label_names=label_names.get(t["name"]), resize=image_size)
        labels = TaskLabels(t["name"], "classification", np.asarray(data.labels, dtype=np.int64),
                            list(data.label_names), data.source)
        return TaskSource(data, {t["name"]: labels})
    data = read_images(csv, split, require_labels=False, resize=image_size, path_col=path_col, label_col=None)
    columns, rows = _table(csv)
    by_line = dict(rows)
    rows = [(int(p), by_line[int(p)]) for p in data.lines]  # the reader's rows, in its order
    return TaskSource(data, _parse_tasks(csv, columns, rows, tasks, [], label_names))


def source_from_arrays(x, labels: dict[str, tuple[str, object]], label_names: dict | None = None,
                       source: str = "<in-memory>") -> TaskSource:
    """A source from Python data: ``x`` an image array (N, H, W[, C]) or a list of texts (or text pairs), and
    ``labels`` task name -> (kind, values) with None / NaN (or -1 for class ids) where a label is missing;
    multilabel values are (N, K) arrays of 0/1/NaN."""
    from .images import ImageSet
    from .labeled import LabeledSet

    if isinstance(x, np.ndarray) and x.ndim >= 3:
        data = ImageSet.from_arrays(x, source=source)
    else:
        texts = list(x)
        pairs = bool(texts) and isinstance(texts[0], (tuple, list))
        data = LabeledSet([t[0] if pairs else str(t) for t in texts], [t[1] for t in texts] if pairs else None, None,
                          "classification", None, source, list(range(1, len(texts) + 1)))
    tasks = {}
    for name, (kind, values) in labels.items():
        names = (label_names or {}).get(name)
        if kind == "classification":
            v = np.asarray([-1 if y is None or (isinstance(y, float) and math.isnan(y)) else int(y) for y in values],
                           dtype=np.int64)
            names = names or [str(i) for i in range(int(v.max()) + 1)]
        elif kind == "regression":
            v = np.asarray([np.nan if y is None else float(y) for y in values], dtype=np.float32)
        else:
            v = np.asarray(values, dtype=np.float32)
            names = names or [str(i) for i in range(v.shape[1])]
        tasks[name] = TaskLabels(name, kind, v, names, source)
        if not tasks[name].present.any():
            raise UserError(f"{source}: every label of task '{name}' is missing; a task needs some labelled examples.")
    return TaskSource(data, tasks)


# --------------------------------------------------------------------------------------------------- sampling


def sampling_probabilities(sizes: list[int], strategy: str = "proportional", temperature: float = 2.0,
                           weights: list[float] | None = None) -> np.ndarray:
    """The chance each source supplies a step's batch.

    proportional: p ∝ n; uniform: p = 1/K; temperature: p ∝ n^(1/T) (T = 1 proportional, T → ∞ uniform; MT-DNN
    and multilingual BERT's smoothing); weighted: p ∝ the given weights. Round-robin has no probabilities (it
    cycles); its long-run share is 1/K, returned here.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if strategy not in SAMPLING:
        raise UserError(f"unknown sampling '{strategy}'; choose one of {', '.join(SAMPLING)}.")
    if strategy in ("uniform", "round-robin"):
        return np.full(len(sizes), 1.0 / len(sizes))
    if strategy == "proportional":
        w = sizes
    elif strategy == "temperature":
        if not temperature > 0:
            raise UserError(f"sampling temperature must be positive (got {temperature}); 1 is proportional, larger "
                            f"values flatten towards uniform.")
        w = sizes ** (1.0 / temperature)
    else:
        if weights is None or len(weights) != len(sizes):
            raise UserError("sampling 'weighted' needs one weight per source.")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or not np.isfinite(w).all() or not w.sum() > 0:
            raise UserError(f"sampling weights {list(weights)} must be non-negative and sum to something positive; "
                            f"give every task a weight >= 0 and at least one > 0.")
    return w / w.sum()


class SourceSampler:
    """Which source supplies the batch of each step: a pure function of (seed, step), identical on every rank.

    Draws are made ``_BLOCK`` steps at a time from a generator seeded by (seed, block), and the number of earlier
    draws of each source (which batch of that source a step takes) is a running count over blocks, cached.
    """

    def __init__(self, sizes: list[int], strategy: str = "proportional", seed: int = 0, temperature: float = 2.0,
                 weights: list[float] | None = None):
        self.k = len(sizes)
        self.strategy = strategy
        self.seed = seed
        self.p = sampling_probabilities(sizes, strategy, temperature, weights)
        self._blocks: list[np.ndarray] = []
        self._before: list[np.ndarray] = [np.zeros(self.k, dtype=np.int64)]  # draws of each source before block b

    def _block(self, b: int) -> np.ndarray:
        while len(self._blocks) <= b:
            i = len(self._blocks)
            if self.strategy == "round-robin":
                draws = (np.arange(i * _BLOCK, (i + 1) * _BLOCK) % self.k).astype(np.int64)
            else:
                draws = np.random.default_rng([self.seed, i, 17]).choice(self.k, size=_BLOCK, p=self.p)
            self._blocks.append(draws)
            self._before.append(self._before[-1] + np.bincount(draws, minlength=self.k))
        return self._blocks[b]

    def source_at(self, step: int) -> int:
        return int(self._block(step // _BLOCK)[step % _BLOCK])

    def draws_before(self, step: int) -> np.ndarray:
        """How often each source was drawn at steps 0 .. step-1."""
        b, i = divmod(step, _BLOCK)
        block = self._block(b)
        return self._before[b] + np.bincount(block[:i], minlength=self.k)


# --------------------------------------------------------------------------------------------------- batches


def label_tensors(tasks: dict[str, TaskLabels], idx) -> dict[str, torch.Tensor]:
    """``labels.<task>`` and ``present.<task>`` of the examples at ``idx`` (missing labels hold 0; the mask says
    they are not real)."""
    idx = np.asarray(idx, dtype=np.int64)
    out = {}
    for name, t in tasks.items():
        values, present = t.values[idx], t.present[idx]
        values = np.where(present, values, 0).astype(np.int64 if t.kind == "classification" else np.float32)
        out[f"labels.{name}"] = torch.from_numpy(values)
        out[f"present.{name}"] = torch.from_numpy(present)
    return out


@dataclass
class MultiTaskBatches:
    """Training batches over several sources for the one loop: ``batch(step)`` draws the step's source with
    ``sampler`` and takes that source's next ``batch_size`` examples (a seeded permutation per pass over it).

    Every batch holds the inputs, ``labels.<task>`` / ``present.<task>`` for the tasks its source carries, and
    ``norm.<task>``: the present labels of the task in the global batch divided by the world size, the divisor
    that makes each rank's share of the per-task mean add up, under DDP's gradient averaging, to the mean over the
    whole batch. ``examples`` are the sources' batchable inputs (``inputs.examples``), in ``sources`` order.
    """

    sources: list[TaskSource]
    examples: list
    batch_size: int
    sampler: SourceSampler
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    _perms: dict = field(default_factory=dict, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        """Steps in which, on average, as many examples are drawn as all sources hold."""
        return max(1, -(-sum(len(s) for s in self.sources) // self.batch_size))

    def _perm(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, k, epoch]).permutation(len(self.sources[k]))
        return self._perms[key]

    def indices(self, step: int) -> tuple[int, np.ndarray]:
        """(source, example indices of the global batch) of a step."""
        k = self.sampler.source_at(step)
        n = len(self.sources[k])
        start = int(self.sampler.draws_before(step)[k]) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        idx = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(positions // n):
            sel = positions // n == epoch
            idx[sel] = self._perm(k, int(epoch))[positions[sel] % n]
        return k, idx

    def batch(self, step: int) -> dict:
        k, idx = self.indices(step)
        seed = (self.seed * 1_000_003 + step) % 2**31
        batch = self.examples[k].collate(idx, seed=seed)  # the whole global batch: augmentation included
        batch.update(label_tensors(self.sources[k].tasks, idx))
        for name in self.sources[k].tasks:
            batch[f"norm.{name}"] = torch.tensor(float(batch[f"present.{name}"].sum()) / self.world_size)
        batch["step_seed"] = seed
        if self.world_size == 1:
            return batch
        if len(idx) < self.world_size:
            raise UserError(f"batch size {self.batch_size} is smaller than the {self.world_size} processes; raise it.")
        return {key: v[self.rank::self.world_size] if torch.is_tensor(v) and v.dim() > 0 else v
                for key, v in batch.items()}
