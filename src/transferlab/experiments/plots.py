"""Training curves people can read at a glance.

Every run directory holds ``metrics.jsonl``: one JSON object per line with ``step``, ``split`` ("train" or
"eval"), ``time``, ``epoch`` and any metrics (``loss``, ``ppl``, ``accuracy``, ...). ``plot_runs`` draws one
panel per metric with every run in its own colour (train solid, eval dashed with markers);
``plot_mean_std`` draws one mean curve per group with a shaded ±1 std band over seeds.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through ``pyplot``:
no global state, no GUI backend, nothing imported until a plot is drawn. PNGs are written to a temporary
name and renamed, so a crash never leaves a truncated image behind.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from ..errors import UserError

METRICS_FILE = "metrics.jsonl"
# Row keys that say where a row sits rather than what was measured.
INDEX_KEYS = ("step", "split", "time", "epoch")
# Drawn only when asked for: they describe the run's speed and schedule, not its quality.
NOT_PLOTTED_BY_DEFAULT = ("tokens_per_s", "images_per_s", "frames_per_s", "lr", "grad_norm", "samples_per_s")
# Auto-selected metrics come in this order; others follow alphabetically.
PREFERRED_ORDER = ("loss", "ppl", "accuracy", "f1", "mcc", "pearson", "spearman")
LOG_SCALE_METRICS = ("ppl",)
TITLES = {"loss": "loss", "ppl": "perplexity (log scale)", "accuracy": "accuracy", "f1": "F1", "mcc": "MCC",
          "pearson": "Pearson r", "spearman": "Spearman ρ", "tokens_per_s": "throughput (tokens/s)",
          "images_per_s": "throughput (images/s)",
          "lr": "learning rate", "knn_accuracy": "kNN accuracy (frozen features)",
          "embedding_std": "embedding std (collapse: ~0)"}
X_LABELS = {"step": "optimizer step", "epoch": "epoch", "time": "wall time (s)"}
DPI = 120


def read_metrics(run_dir) -> list[dict]:
    """Read ``RUN_DIR/metrics.jsonl``; lines that are not JSON objects are skipped with a warning.

    Args:
        run_dir: a run directory (or the ``metrics.jsonl`` file itself).

    Returns:
        The rows in file order.
    """
    path = Path(run_dir)
    if path.is_dir() or path.name != METRICS_FILE:
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"'{path}' does not exist. Pass a run directory written by a training run "
                        f"(it holds {METRICS_FILE}).")
    rows, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(lineno)
    if bad:
        # A crash mid-write truncates the last line; that must not stop anyone from plotting the rest.
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not JSON objects (line {shown}).",
                      stacklevel=2)
    return rows


def plot_runs(run_dirs: list, out_png, metrics: list[str] | None = None, x: str = "step") -> Path:
    """Plot the metrics of one or more runs, one panel per metric.

    Args:
        run_dirs: run directories (each holding ``metrics.jsonl``).
        out_png: the PNG to write.
        metrics: metric names, one panel each; None picks loss, ppl and the eval metrics found in the runs.
        x: the row key for the x axis: "step", "epoch" or "time".

    Returns:
        The path of the written PNG.
    """
    if not run_dirs:
        raise UserError("plot: no run directories given. Pass at least one run directory.")
    runs = [(name, read_metrics(d)) for name, d in zip(_run_names(run_dirs), run_dirs)]
    for (name, rows), d in zip(runs, run_dirs):
        if not rows:
            warnings.warn(f"{Path(d) / METRICS_FILE}: no metrics rows; run '{name}' is left out.", stacklevel=2)
    runs = [(name, rows) for name, rows in runs if rows]
    if not runs:
        raise UserError(f"plot: none of {', '.join(map(str, run_dirs))} has any metrics rows to plot.")
    all_rows = [r for _, rows in runs for r in rows]
    if not any(_number(r.get(x)) is not None for r in all_rows):
        raise UserError(f"plot: x='{x}' is not a key of the metrics rows. Use one of "
                        f"{', '.join(k for k in ('step', 'epoch', 'time') if any(k in r for r in all_rows))}.")
    available = _metric_names(all_rows)
    if metrics is None:
        eval_keys = _metric_names([r for r in all_rows if r.get("split") != "train"])
        metrics = [m for m in available
                   if m not in NOT_PLOTTED_BY_DEFAULT and (m in ("loss", "ppl") or m in eval_keys)]
        if not metrics:
            metrics = available
    else:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise UserError(f"plot: metric(s) {', '.join(missing)} not found in the runs. "
                            f"Available: {', '.join(available) or '(none)'}.")
    if not metrics:
        raise UserError("plot: the metrics rows hold no numeric metrics to plot.")

    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter

    n = len(metrics)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _figure((4.6 * ncols, 3.4 * nrows + 0.6))
    colours = _colours(len(runs))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for colour, (name, rows) in zip(colours, runs):
            for split, style in (("train", dict(linestyle="-", linewidth=1.6, alpha=0.9)),
                                 ("eval", dict(linestyle="--", linewidth=1.6, marker="o", markersize=4))):
                xs, ys = _series(rows, split, x, metric)
                if xs:
                    ax.plot(xs, ys, color=colour, **style)
        if metric in LOG_SCALE_METRICS and _all_positive(runs, x, metric):
            ax.set_yscale("log")
            # Plain numbers ("20", "6") instead of the default "2 x 10^1" read faster.
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
        ax.set_title(TITLES.get(metric, metric))
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_ylabel(metric)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)

    # One legend for the whole figure: colour = run, line style = split.
    handles = [Line2D([], [], color=c, linewidth=2.5) for c in colours]
    labels = [name for name, _ in runs]
    splits = {r.get("split") for _, rows in runs for r in rows}
    if "train" in splits:
        handles.append(Line2D([], [], color="0.35", linestyle="-"))
        labels.append("train")
    if splits - {"train"}:
        handles.append(Line2D([], [], color="0.35", linestyle="--", marker="o", markersize=4))
        labels.append("eval")
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, out_png)


def plot_mean_std(curves: dict[str, list[list[float]]], out_png, xlabel: str, ylabel: str, title: str,
                  xs=None, *, baseline: float | None = None, baseline_label: str = "chance") -> Path:
    """Draw each group's mean curve over seeds with a shaded ±1 std band.

    Args:
        curves: group name -> one curve per seed (e.g. dev accuracy per epoch). Curves of unequal length
            are averaged over the seeds that reach each point.
        out_png: the PNG to write.
        xlabel, ylabel, title: axis labels and title.
        xs: x values; defaults to 1, 2, ... (epochs count from one).
        baseline: draw a dotted horizontal reference line at this y (e.g. 0.5 for chance accuracy).
        baseline_label: its legend label.

    Returns:
        The path of the written PNG.
    """
    import numpy as np

    groups = {name: [list(map(float, c)) for c in runs] for name, runs in curves.items()
              if any(len(c) for c in runs)}
    if not groups:
        raise ValueError("plot_mean_std: every group is empty; pass at least one non-empty curve.")
    length = max(len(c) for runs in groups.values() for c in runs)
    xs = np.arange(1, length + 1) if xs is None else np.asarray(list(xs), dtype=float)
    if len(xs) < length:
        raise ValueError(f"plot_mean_std: {len(xs)} x values for curves of up to {length} points.")
    xs = xs[:length]

    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for colour, (name, runs) in zip(_colours(len(groups)), groups.items()):
        n = max(len(c) for c in runs)
        table = np.full((len(runs), n), np.nan)
        for i, c in enumerate(runs):
            table[i, : len(c)] = c
        count = np.sum(~np.isnan(table), axis=0)
        mean = np.nanmean(table, axis=0)
        # Sample std across seeds (ddof=1); a point reached by one seed has no spread to show.
        std = np.zeros(n)
        several = count > 1
        std[several] = np.nanstd(table[:, several], axis=0, ddof=1)
        ax.plot(xs[:n], mean, color=colour, linewidth=2, marker="o", markersize=4, label=f"{name} (n={len(runs)})")
        ax.fill_between(xs[:n], mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        # The final value, printed where the eye ends up.
        ax.annotate(f"{mean[-1]:.3g}", (xs[n - 1], mean[-1]), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=9, color=colour)
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linestyle=":", linewidth=1.2, label=baseline_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.35)
    if length <= 20 and np.allclose(xs, np.round(xs)):
        ax.set_xticks(xs)
    ax.margins(x=0.08)
    ax.legend(loc="best", frameon=True, framealpha=0.9)
    fig.tight_layout()
    return _save(fig, out_png)


def _figure(size):
    """A pyplot-free figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _run_names(run_dirs) -> list[str]:
    """Legend names: the directory name, or more of the path where names would collide ("a/final")."""
    paths = [Path(d).resolve() for d in run_dirs]
    for depth in range(1, 6):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in run_dirs]


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _metric_names(rows) -> list[str]:
    names = {k for r in rows for k, v in r.items() if k not in INDEX_KEYS and _number(v) is not None}
    return [m for m in PREFERRED_ORDER if m in names] + sorted(names - set(PREFERRED_ORDER))


def _series(rows, split: str, x: str, metric: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of one split; rows without a split count as eval, rows missing x or the metric are skipped."""
    xs, ys = [], []
    for r in rows:
        if (r.get("split", "eval") == "train") != (split == "train"):
            continue
        xv, yv = _number(r.get(x)), _number(r.get(metric))
        if xv is not None and yv is not None:
            xs.append(xv)
            ys.append(yv)
    return xs, ys


def _all_positive(runs, x: str, metric: str) -> bool:
    ys = [y for _, rows in runs for split in ("train", "eval") for y in _series(rows, split, x, metric)[1]]
    return bool(ys) and min(ys) > 0
