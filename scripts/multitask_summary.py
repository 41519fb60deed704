"""Tables for docs/results/multitask/README.md from the canvas experiments' results.jsonl (scripts/multitask_canvas.py).

Usage: .venv/bin/python scripts/multitask_summary.py [docs/results/multitask]   (prints Markdown)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from transferlab.experiments.multitask import delta_m, verdict
from transferlab.experiments.report import markdown_table


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def paired(a: dict, b: dict) -> tuple[float, float, int]:
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    return float(np.mean(d)), float(np.std(d, ddof=1)) if len(d) > 1 else 0.0, len(d)


def missing(rs: list[dict]) -> str:
    by = {}
    for r in rs:
        by.setdefault((r["setting"]["fraction"], r["setting"]["method"]), {})[r["seed"]] = r
    fractions = sorted({f for f, _ in by}, reverse=True)
    body = []
    for f in fractions:
        for m in ("mask", "drop", "negative"):
            cell = by.get((f, m)) or (by.get((f, "mask")) if f == 1.0 else None)
            if cell is None or (f == 1.0 and m != "mask"):
                continue
            auc = {s: r["auc"] for s, r in cell.items()}
            line = [f"{f:.2f}", m, f"{np.mean([r['train_examples'] for r in cell.values()]):.0f}",
                    ms(auc.values()), ms([r["accuracy"] for r in cell.values()])]
            if m != "mask":
                base = {s: r["auc"] for s, r in by[(f, "mask")].items()}
                mean, std, n = paired(base, auc)
                line.append(f"{mean:+.3f} ± {std:.3f} (n={n})")
            else:
                line.append("")
            body.append(line)
    return markdown_table(["label fraction", "method", "training canvases", "mean AUC (10 tasks)",
                           "mean accuracy", "mask − this method (paired AUC)"], body)


def capacity(rs: list[dict]) -> str:
    metric = {"count": "pearson", "largest": "accuracy", "has7": "roc_auc"}
    by = {}
    for r in rs:
        by.setdefault((r["setting"]["width"], r["setting"]["task"]), {})[r["seed"]] = r
    body = []
    for width in sorted({w for w, _ in by}):
        joint = by.get((width, "all"), {})
        if not joint:
            continue
        params = next(iter(joint.values()))["params"]
        deltas = []
        for seed, r in joint.items():
            j = {t: r["scores"][t][m] for t, m in metric.items()}
            s = {t: by[(width, t)][seed]["scores"][t][m] for t, m in metric.items() if seed in by.get((width, t), {})}
            if len(s) == len(metric):
                deltas.append(delta_m(j, s, metric))
        line = [f"{width}-{2 * width}-{4 * width}", f"{params:,}"]
        for t, m in metric.items():
            jv = {s: r["scores"][t][m] for s, r in joint.items()}
            sv = {s: r["scores"][t][m] for s, r in by.get((width, t), {}).items()}
            diff, dstd, n = paired(jv, sv)
            cell = {"diff": diff, "diff_std": dstd, "std": float(np.std(list(jv.values()), ddof=1)) if n > 1 else 0.0,
                    "single_std": float(np.std(list(sv.values()), ddof=1)) if n > 1 else 0.0, "seeds": n}
            line.append(f"{ms(sv.values())} → {ms(jv.values())} ({verdict(cell, m)})")
        line.append(ms(deltas) + "%")
        body.append(line)
    return markdown_table(["widths", "backbone params", "count (Pearson) single → joint",
                           "largest digit (accuracy) single → joint", "has 7 (AUC) single → joint",
                           "Δm per seed"], body)


def weighting(rs: list[dict], capacity_rows: list[dict]) -> str:
    """uncertainty / pcgrad runs against capacity's joint run at the same width, which is 'equal'."""
    metric = {"count": "pearson", "largest": "accuracy", "has7": "roc_auc"}
    by = {}
    widths = {r["setting"]["width"] for r in rs}
    for r in capacity_rows:
        if r["setting"]["task"] == "all" and r["setting"]["width"] in widths:
            by.setdefault((r["setting"]["width"], "equal"), {})[r["seed"]] = r
    for r in rs:
        by.setdefault((r["setting"]["width"], r["setting"]["weighting"]), {})[r["seed"]] = r
    body = []
    for width, method in sorted(by):
        cell = by[(width, method)]
        line = [f"{width}-{2 * width}-{4 * width}", method]
        for t, m in metric.items():
            line.append(ms([r["scores"][t][m] for r in cell.values()]))
        if method != "equal" and (width, "equal") in by:
            base = by[(width, "equal")]
            seeds = sorted(set(cell) & set(base))
            d = [delta_m({t: cell[s]["scores"][t][m] for t, m in metric.items()},
                         {t: base[s]["scores"][t][m] for t, m in metric.items()}, metric) for s in seeds]
            line.append(ms(d) + "%")
        else:
            line.append("")
        body.append(line)
    return markdown_table(["widths", "weighting", "count (Pearson)", "largest digit (accuracy)", "has 7 (AUC)",
                           "Δm against equal (per seed)"], body)


def datasum(rs: list[dict]) -> str:
    by = {}
    for r in rs:
        by.setdefault(r["setting"]["k"], {})[r["seed"]] = r
    base = {s: r["target_auc"] for s, r in by.get(0, {}).items()}
    body = []
    for k in sorted(by):
        auc = {s: r["target_auc"] for s, r in by[k].items()}
        line = [str(k), f"{500 * k:,}", ms(auc.values()), ms([r["target_accuracy"] for r in by[k].values()])]
        if k:
            mean, std, n = paired(auc, base)
            clear = "clear" if n > 1 and abs(mean) > 2 * max(std, np.std(list(auc.values()), ddof=1),
                                                            np.std(list(base.values()), ddof=1)) else "within noise"
            line.append(f"{mean:+.3f} ± {std:.3f} ({clear})")
        else:
            line.append("")
        body.append(line)
    return markdown_table(["other tasks k", "their labelled canvases", "target 'is there a 3?' AUC", "accuracy",
                           "gain over k = 0 (paired)"], body)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/multitask")
    capacity_rows = rows(root / "capacity" / "results.jsonl")
    for name, fn in (("missing", missing), ("capacity", capacity), ("datasum", datasum),
                     ("weighting", lambda rs: weighting(rs, capacity_rows))):
        rs = rows(root / name / "results.jsonl")
        if rs:
            seeds = len({r["seed"] for r in rs})
            print(f"### {name} ({len(rs)} runs, {seeds} seed(s), {sum(r['wall_s'] for r in rs) / 60:.0f} min)\n")
            print(fn(rs) + "\n")


if __name__ == "__main__":
    main()
