"""Summarise scripts/objectives_experiment.sh: one table and one bar chart over every pretraining objective.

Usage: python scripts/objectives_summary.py WORKDIR OUTDIR
Reads WORKDIR/pretrain-*/metrics.jsonl (held-out loss, wall time), WORKDIR/compare-*/results.jsonl (transfer by
`transferlab compare`) and WORKDIR/seq2seq/*/results.json (en->fr), and writes OUTDIR/summary.md and
OUTDIR/objectives.png (dev metric per objective and task, mean ± std over seeds, from-scratch twins hatched).
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from transferlab.experiments.compare import read_results
from transferlab.experiments.plots import _figure, _save


def pretraining(run: Path) -> dict:
    """Held-out loss at the end and wall seconds (summed over resumed segments, whose clocks restart)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall, last = 0.0, 0.0
    for r in rows:
        if r["time"] < last:  # a resumed process starts its clock again
            wall += last
        last = r["time"]
    evals = [r for r in rows if r["split"] == "eval"]
    return {"steps": rows[-1]["step"], "wall_s": wall + last, "heldout_loss": evals[-1]["loss"] if evals else None}


def family(work: Path, objective: str) -> str:
    return json.loads((work / f"pretrain-{objective}" / "final" / "config.json").read_text())["backbone"]["family"]


def transfer(results: Path, work: Path) -> tuple[dict, dict]:
    """(entry, budget) -> the headline metric over seeds, and (entry, budget) -> {seed: value} for pairing.
    Fine-tuned rows are named by objective, scratch rows (one per architecture) by the family of the backbone they
    copy, other methods by objective and method."""
    by, seeds = defaultdict(list), defaultdict(dict)
    for r in read_results(results):
        if r["method"] == "scratch":
            name = f"scratch ({family(work, r['checkpoint'])})"
        elif r["method"] == "finetune" or r["checkpoint"] == "-":
            name = r["checkpoint"] if r["checkpoint"] != "-" else r["method"]
        else:
            name = f"{r['checkpoint']} ({r['method']})"
        by[(name, r["budget"])].append(r["final"][r["metric"]])
        seeds[(name, r["budget"])][r["seed"]] = r["final"][r["metric"]]
    return by, seeds


def gain(seeds: dict, work: Path, name: str, budget: str) -> str:
    """A fine-tuned objective against the scratch twin of its architecture, paired by seed, with a check mark when
    the mean gain is more than twice the std of the paired differences."""
    if name.startswith("scratch") or not (work / f"pretrain-{name}").is_dir():
        return ""
    twin = seeds.get((f"scratch ({family(work, name)})", budget), {})
    paired = [v - twin[k] for k, v in seeds[(name, budget)].items() if k in twin]
    if len(paired) < 2:
        return ""
    mean, std = 100 * np.mean(paired), 100 * np.std(paired, ddof=1)
    return f" ({mean:+.1f}{' ✓' if mean > 2 * std else ''})"


def mean_std(v) -> str:
    return f"{100 * np.mean(v):.1f} ± {100 * (np.std(v, ddof=1) if len(v) > 1 else 0.0):.1f}"


def main(work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(work.glob("pretrain-*/metrics.jsonl"))
    lines = ["## Pretraining (same corpus, same tokens seen)", "",
             "| objective | steps | wall time (one thread, shared machine) | held-out loss of its own objective |",
             "|---|---:|---:|---:|"]
    for m in runs:
        p = pretraining(m.parent)
        loss = f"{p['heldout_loss']:.3f}" if p["heldout_loss"] is not None else "-"
        name = m.parent.name.removeprefix("pretrain-")
        lines.append(f"| {name} | {p['steps']} | {p['wall_s'] / 60:.1f} min | {loss} |")
    tasks = {d.name.removeprefix("compare-"): transfer(d / "results.jsonl", work)
             for d in sorted(work.glob("compare-*")) if (d / "results.jsonl").exists()}
    for task, (by, seeds) in tasks.items():
        budgets = sorted({b for _, b in by}, key=lambda b: (b == "all", int(b) if b != "all" else 0))
        lines += ["", f"## Transfer to {task} (dev accuracy, %, mean ± std over seeds; in brackets the gain over the "
                      f"scratch twin of the same architecture, paired by seed, ✓ when above twice its spread)", "",
                  "| backbone | " + " | ".join(f"{b} labels" for b in budgets) + " |",
                  "|---|" + "---:|" * len(budgets)]
        for name in sorted({n for n, _ in by}, key=lambda n: (n.startswith("scratch"), n)):
            lines.append(f"| {name} | " + " | ".join(mean_std(by[(name, b)]) + gain(seeds, work, name, b)
                                                   if by.get((name, b)) else "-" for b in budgets) + " |")
    s2s = sorted(work.glob("seq2seq/*/results.json"))
    if s2s:
        lines += ["", "## en->fr word translation (seq2seq fine-tuning, one seed)", "", "| model | dev metrics |",
                  "|---|---|"]
        for r in s2s:
            final = json.loads(r.read_text())["final"]
            lines.append(f"| {r.parent.name} | " + ", ".join(f"{k} {v:.2f}" for k, v in final.items()
                                                            if k not in ("step", "epoch")) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")

    fig = _figure((5.5 * max(1, len(tasks)), 4.2))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, (task, (by, _)) in zip(axes, tasks.items()):
        budget = sorted({b for _, b in by})[0]
        names = sorted({n for n, b in by if b == budget}, key=lambda n: (n.startswith("scratch"), n))
        means = [100 * np.mean(by[(n, budget)]) for n in names]
        stds = [100 * np.std(by[(n, budget)], ddof=1) if len(by[(n, budget)]) > 1 else 0 for n in names]
        bars = ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="#4c72b0")
        for bar, n in zip(bars, names):
            if n.startswith("scratch"):
                bar.set_color("#bbbbbb")
                bar.set_hatch("//")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel("dev accuracy (%)")
        ax.set_ylim(min(means) - 10, max(means) + 5)
        ax.set_title(f"{task}, {budget} labels (mean ± std over seeds)")
    fig.tight_layout()
    _save(fig, out / "objectives.png")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
