"""Summary, plots and the Markdown / HTML report of a comparison grid, all computed from its results rows.

The conclusion is written from the numbers every time: which method wins at each label budget, by how much,
and whether the lead is larger than the seed-to-seed spread. "Clear" means the difference of the means exceeds
twice the larger of the two seed standard deviations (sample std over seeds); with one seed there is no spread
and the report says so instead of judging.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np

from ..fsutil import write_text
from .plots import _colours, _figure, _save, plot_mean_std

SUMMARY = "summary.csv"
EFFICIENCY_PNG = "data_efficiency.png"
CURVE_PNG = "learning_curve_{budget}.png"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
NO_CHECKPOINT = "-"  # the checkpoint column of runs that use none (the pipeline)


def remove_outputs(out: Path) -> None:
    """Delete an earlier summary / report / plots, so an interrupted grid never shows a report of older results."""
    for p in [out / SUMMARY, out / REPORT_MD, out / REPORT_HTML, out / EFFICIENCY_PNG,
              *out.glob(CURVE_PNG.format(budget="*"))]:
        p.unlink(missing_ok=True)


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def evaluated(setup: dict) -> str:
    """The split the headline numbers come from: test (of the weights of the best dev epoch) when the grid has
    one, else dev (at the last epoch)."""
    return "test" if "test" in setup["task"] else "dev"


def headline(row: dict, setup: dict, metric: str | None = None) -> float:
    """A run's headline value: its test metric when the grid has a test split, else its last-epoch dev metric.
    ``metric`` picks another of the task's metrics than the headline one (NaN where a run did not record it)."""
    metric = metric or setup["task"]["metric"]
    scores = row["test"] if evaluated(setup) == "test" else row["final"]
    return float(scores.get(metric, float("nan")))


def _pipeline_name(setup: dict) -> str:
    return {"image": "HOG", "audio": "MFCC"}.get(setup["task"].get("modality"), "TF-IDF")


def entry_label(row: dict, setup: dict) -> str:
    """The name of a line in tables and plots: the method, plus the checkpoint when several are compared. Scratch
    runs once per architecture (under the first checkpoint of it), so it is named by the architecture instead, and
    not at all when every checkpoint shares one."""
    if len(setup["checkpoints"]) > 1 and row["checkpoint"] != NO_CHECKPOINT:
        if row["kind"] == "scratch":
            if len({c["arch"] for c in setup["checkpoints"]}) == 1:
                return row["method"]
            source = next((c for c in setup["checkpoints"] if c["name"] == row["checkpoint"]), None)
            if source is not None:
                return f"{row['method']} ({source['summary'].split(',')[0]})"
        return f"{row['method']} ({row['checkpoint']})"
    return row["method"]


def summarize(rows: list[dict], setup: dict) -> list[dict]:
    """Mean ± std over seeds of the headline metric (``headline``) per (entry, budget), and the gain over scratch.

    The gain is paired by seed (same labeled subset, same seed), and compared against scratch of the same
    architecture; the pipeline is compared against the first scratch baseline.
    """
    metric = setup["task"]["metric"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((entry_label(r, setup), r["budget"]), []).append(r)
    scratch = {}
    for (label, budget), rs in groups.items():
        if rs[0]["kind"] == "scratch":
            scratch.setdefault((rs[0]["arch"], budget), rs)
            scratch.setdefault((None, budget), rs)
    summary = []
    for (label, budget), rs in groups.items():
        values = [headline(r, setup) for r in rs]
        base = scratch.get((rs[0]["arch"], budget))
        row = {"entry": label, "checkpoint": rs[0]["checkpoint"], "method": rs[0]["method"], "kind": rs[0]["kind"],
               "budget": budget, "budget_size": rs[0]["budget_size"], "seeds": len(rs), "metric": metric,
               "mean": float(np.mean(values)), "std": _std(values),
               "best_epoch_mean": float(np.mean([r["best"][metric] for r in rs])),
               "gain": None, "gain_std": None, "scratch_mean": None, "scratch_std": None,
               "trained_params": int(np.max([r["trained_params"] for r in rs])),
               "wall_s": float(np.mean([r["wall_s"] for r in rs])),
               "also": {m: (float(np.mean(v)), _std(v)) for m in setup["task"].get("metrics", [])[1:]
                        if not np.isnan(v := [headline(r, setup, m) for r in rs]).any()}}
        if base is not None and rs[0]["kind"] != "scratch":
            by_seed = {r["seed"]: headline(r, setup) for r in base}
            diffs = [headline(r, setup) - by_seed[r["seed"]] for r in rs if r["seed"] in by_seed]
            base_values = list(by_seed.values())
            row.update(gain=float(np.mean(diffs)) if diffs else None, gain_std=_std(diffs),
                       scratch_mean=float(np.mean(base_values)), scratch_std=_std(base_values))
        summary.append(row)
    order = {b: i for i, b in enumerate(setup["budgets"])}
    entries = list(dict.fromkeys(entry_label(r, setup) for r in rows))
    return sorted(summary, key=lambda s: (order[s["budget"]], entries.index(s["entry"])))


TIE = 1e-9  # means closer than this are a tie (e.g. two models that both predict the majority class)


def _clear(diff: float, std_a: float, std_b: float) -> bool:
    return diff > 2 * max(std_a, std_b)


def constant_floor(setup: dict) -> dict | None:
    """The floor a classifier has to clear: the best headline score any constant answer gets on the evaluated
    split, found by scoring every single-label answer against that split's labels (from its class counts). The
    most frequent *training* label is not it when the splits' class balance differs (TREC: 0.188 accuracy for it,
    0.276 for the best constant answer on the test set). None without class counts or for regression.

    Returns {"label", "score", "train_label", "train_score"} (the last two: always answering the most frequent
    training label, for the sentence that says why the floor is not that)."""
    from ..evaluation.metrics import METRIC_TASK, METRICS, compute_metrics

    metric = setup["task"]["metric"]
    counts, train = setup.get(f"{evaluated(setup)}_class_counts"), setup.get("class_counts")
    if not counts or not sum(counts.values()) or METRIC_TASK.get(metric) != "classification" or metric not in METRICS:
        return None
    names = list(counts)
    labels = np.repeat(np.arange(len(names)), [counts[n] for n in names])
    scores = {}
    for k, name in enumerate(names):
        preds = np.full(len(labels), k)
        onehot = np.eye(len(names))[preds]
        value = compute_metrics([metric], preds, labels, onehot)[metric]
        if np.isfinite(value):
            scores[name] = float(value)
    if not scores:
        return None
    best = max(scores, key=lambda n: (scores[n], counts[n]))
    train_label = max(train, key=train.get) if train else None
    return {"label": best, "score": scores[best], "train_label": train_label,
            "train_score": scores.get(train_label) if train_label is not None else None}


def conclusions(summary: list[dict], setup: dict) -> list[str]:
    """Plain-language findings computed from the summary: the majority-class floor, one paragraph per budget, then
    the trend."""
    metric = setup["task"]["metric"]
    seeds = len(setup["seeds"])
    paragraphs = []
    floor = constant_floor(setup)
    split = evaluated(setup)
    floor_name = "the majority class"
    if floor and floor["label"] == floor["train_label"]:
        paragraphs.append(f"Always answering the most frequent training label ('{floor['label']}') scores "
                          f"{floor['score']:.3f} {metric} on {split}, the best any constant answer scores there "
                          f"(every single-label answer was scored against the {split} labels): a model at or below "
                          f"that has learned nothing usable.")
    elif floor:
        floor_name = "the best constant answer"
        train_part = (f"; always answering the most frequent training label ('{floor['train_label']}') would score "
                      f"only {floor['train_score']:.3f}, because the class balance of {split} differs"
                      if floor["train_score"] is not None else "")
        paragraphs.append(f"The best constant answer on {split} is '{floor['label']}', which scores "
                          f"{floor['score']:.3f} {metric} (every single-label answer was scored against the {split} "
                          f"labels){train_part}: a model at or below {floor['score']:.3f} has learned nothing "
                          f"usable.")
    for budget in setup["budgets"]:
        cells = sorted((s for s in summary if s["budget"] == budget), key=lambda s: -s["mean"])
        if not cells:
            continue
        size = cells[0]["budget_size"]
        where = f"all {size}" if budget == "all" else budget
        win = cells[0]
        text = f"**At {where} labels**, {win['entry']} scores best ({metric} {win['mean']:.3f} ± {win['std']:.3f})"
        tied = [c["entry"] for c in cells[1:] if c["mean"] - win["mean"] > -TIE]
        if tied:
            text = (f"**At {where} labels**, {win['entry']} and {' and '.join(tied)} tie for best ({metric} "
                    f"{win['mean']:.3f}).")
        elif len(cells) > 1:
            second = cells[1]
            margin = win["mean"] - second["mean"]
            text += f", ahead of {second['entry']} ({second['mean']:.3f} ± {second['std']:.3f}) by {margin:.3f}"
            if seeds < 2:
                text += "; with one seed there is no spread to judge that lead against."
            elif _clear(margin, win["std"], second["std"]):
                text += ", more than twice the seed-to-seed spread: a clear win."
            else:
                text += (f", within twice the seed-to-seed spread ({max(win['std'], second['std']):.3f}): not a "
                         f"clear win, the order could change with other seeds.")
        else:
            text += "."
        transferred = [s for s in cells if s["gain"] is not None and s["kind"] not in ("scratch", "pipeline")]
        if transferred:
            best = max(transferred, key=lambda s: s["mean"])
            spread = max(best["std"], best["scratch_std"])
            if best["gain"] > 0 and seeds > 1 and _clear(best["gain"], best["std"], best["scratch_std"]):
                verdict = f"more than twice the seed spread ({spread:.3f}): pretraining clearly helps here"
            elif best["gain"] > 0 and seeds > 1:
                verdict = f"no more than twice the seed spread ({spread:.3f}): too small to call"
            elif best["gain"] > 0:
                verdict = "(one seed, so no spread to judge it against)"
            else:
                verdict = "so pretraining did not help at this budget"
            text += (f" The best transferred model, {best['entry']}, is {best['gain']:+.3f} against training from "
                     f"scratch ({best['scratch_mean']:.3f} ± {best['scratch_std']:.3f}), {verdict}.")
        if floor:
            below = [c["entry"] for c in cells if c["mean"] <= floor["score"] + TIE]
            if below:
                text += (f" {', '.join(below[:-1]) + ' and ' if len(below) > 1 else ''}{below[-1]} "
                         f"{'do' if len(below) > 1 else 'does'} not beat {floor_name} ({floor['score']:.3f}).")
        pipeline = [s for s in cells if s["kind"] == "pipeline"]
        networks = [s for s in cells if s["kind"] != "pipeline"]
        if pipeline and networks:
            p, n = pipeline[0], networks[0]
            diff = p["mean"] - n["mean"]
            name = _pipeline_name(setup)
            if diff >= 0:
                text += (f" The hand-designed {name} pipeline ({p['mean']:.3f}) matches or beats every network "
                         f"here (best network {n['entry']}: {n['mean']:.3f}).")
            else:
                text += f" The {name} pipeline ({p['mean']:.3f}) trails the best network by {-diff:.3f}."
        paragraphs.append(text)
    paragraphs.extend(_trend(summary, setup))
    return paragraphs


def _trend(summary: list[dict], setup: dict) -> list[str]:
    """How the winner and the gain over scratch move with the budget."""
    budgets = [b for b in setup["budgets"] if any(s["budget"] == b for s in summary)]
    if len(budgets) < 2:
        return []
    winners = []
    for b in budgets:
        cells = sorted((s for s in summary if s["budget"] == b), key=lambda s: -s["mean"])
        tie = len(cells) > 1 and cells[0]["mean"] - cells[1]["mean"] < TIE
        winners.append("a tie" if tie else cells[0]["entry"])
    text = []
    if len(set(winners)) == 1 and winners[0] == "a tie":
        text.append("The best methods tie at every budget.")
    elif len(set(winners)) == 1:
        text.append(f"{winners[0][:1].upper()}{winners[0][1:]} wins at every budget.")
    else:
        text.append("The winner changes with the number of labels: " +
                    ", ".join(f"{w} at {b}" for w, b in zip(winners, budgets)) + ".")
    gains = []
    for b in budgets:
        cells = [s for s in summary if s["budget"] == b and s["gain"] is not None
                 and s["kind"] not in ("scratch", "pipeline")]
        if cells:
            gains.append((b, max(cells, key=lambda s: s["mean"])["gain"]))
    if len(gains) >= 2:
        (b0, g0), (b1, g1) = gains[0], gains[-1]
        trend = "shrinks" if g1 < g0 - 1e-9 else "grows" if g1 > g0 + 1e-9 else "stays the same"
        text.append(f"The gain of the best transferred model over scratch {trend} from {g0:+.3f} at {b0} labels "
                    f"to {g1:+.3f} at {b1} labels.")
    return [" ".join(text)]


# ------------------------------------------------------------------------------------------------ tables


def _cell(s: dict | None) -> str:
    return "—" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def _gain_cell(s: dict | None, seeds: int) -> str:
    if s is None or s["gain"] is None:
        return "—"
    mark = " ✓" if seeds > 1 and s["gain"] > 0 and _clear(s["gain"], s["std"], s["scratch_std"]) else ""
    return f"{s['gain']:+.3f} ± {s['gain_std']:.3f}{mark}"


def _also_cell(s: dict | None, metric: str) -> str:
    if s is None or metric not in s["also"]:
        return "—"
    mean, std = s["also"][metric]
    return f"{mean:.3f} ± {std:.3f}"


def tables(summary: list[dict], setup: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for the headline table, the gain table, and the cost table."""
    budgets = setup["budgets"]
    entries = list(dict.fromkeys(s["entry"] for s in summary))
    at = {(s["entry"], s["budget"]): s for s in summary}
    head = ["method"] + [f"{b} ({setup['budget_sizes'][b]})" if b == "all" else b for b in budgets]
    metric, seeds = setup["task"]["metric"], len(setup["seeds"])
    main = [[e] + [_cell(at.get((e, b))) for b in budgets] for e in entries]
    gain = [[e] + [_gain_cell(at.get((e, b)), seeds) for b in budgets] for e in entries
            if any(at.get((e, b)) and at[(e, b)]["gain"] is not None for b in budgets)]
    cost = [[e, f"{max(s['trained_params'] for s in summary if s['entry'] == e):,}"]
            + [f"{at[(e, b)]['wall_s']:.1f}" if (e, b) in at else "—" for b in budgets] for e in entries]
    what = ("Test {} of the best dev epoch's weights" if evaluated(setup) == "test" else "Dev {} at the last epoch")
    out = [(f"{what.format(metric)} (mean ± std over {seeds} seeds), by label budget", head, main)]
    if gain:
        out.append((f"Gain over scratch (paired by seed; ✓ = more than twice the seed spread)", head, gain))
    for other in setup["task"].get("metrics", [])[1:]:  # the task's other metrics, e.g. ROC AUC beside accuracy
        cells = [[e] + [_also_cell(at.get((e, b)), other) for b in budgets] for e in entries]
        if any(c != "—" for row in cells for c in row[1:]):
            out.append((f"{what.format(other)} (mean ± std over {seeds} seeds)", head, cells))
    out.append(("Trained parameters and seconds per run", ["method", "trained params"] + head[1:], cost))
    return out


def confusion_tables(rows: list[dict], setup: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """At the largest budget, each network method's confusion matrix on the evaluated split, summed over seeds,
    with each class's recall: what an imbalanced task's accuracy hides (a model that calls every X-ray pneumonia
    scores 62.5% on PneumoniaMNIST's test set)."""
    names = setup["task"].get("label_names")
    budget = setup["budgets"][-1]
    if not names:
        return []
    out = []
    for entry in dict.fromkeys(entry_label(r, setup) for r in rows):
        rs = [r for r in rows if r["budget"] == budget and entry_label(r, setup) == entry and "confusion" in r]
        if not rs:
            continue
        cm = np.sum([np.asarray(r["confusion"]) for r in rs], axis=0)
        body = [[f"true {name}"] + [f"{v:,}" for v in cm[i]] +
                [f"{cm[i, i] / cm[i].sum():.3f}" if cm[i].sum() else "—"] for i, name in enumerate(names)]
        where = f"all {setup['budget_sizes'][budget]}" if budget == "all" else budget
        out.append((f"{entry} at {where} labels: confusion on {evaluated(setup)}, summed over {len(rs)} seeds",
                    [""] + [f"predicted {n}" for n in names] + ["recall"], body))
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_csv(summary: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["entry", "checkpoint", "method", "kind", "budget", "budget_size", "seeds", "metric", "mean", "std",
              "best_epoch_mean", "gain", "gain_std", "scratch_mean", "scratch_std", "trained_params", "wall_s"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for s in summary:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in s.items() if k in fields})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ plots


def plot_data_efficiency(summary: list[dict], setup: dict, out_png: Path) -> Path:
    """Metric vs label budget, one line per method, shaded ±1 std over seeds."""
    metric = setup["task"]["metric"]
    entries = list(dict.fromkeys(s["entry"] for s in summary))
    fig = _figure((7.2, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    sizes = sorted({s["budget_size"] for s in summary})
    for colour, entry in zip(_colours(len(entries)), entries):
        cells = sorted((s for s in summary if s["entry"] == entry), key=lambda s: s["budget_size"])
        xs = np.array([s["budget_size"] for s in cells], dtype=float)
        mean = np.array([s["mean"] for s in cells])
        std = np.array([s["std"] for s in cells])
        style = "--" if cells[0]["kind"] == "pipeline" else ":" if cells[0]["kind"] == "scratch" else "-"
        ax.plot(xs, mean, style, color=colour, linewidth=2, marker="o", markersize=4, label=entry)
        # Every metric here lies in [-1, 1] (accuracy and F1 in [0, 1]): a band past the bound would mislead.
        low = 0.0 if metric in ("accuracy", "f1") else -1.0
        ax.fill_between(xs, np.clip(mean - std, low, 1), np.clip(mean + std, low, 1), color=colour, alpha=0.18,
                        linewidth=0)
    if len(sizes) > 1 and sizes[-1] / sizes[0] >= 5:
        ax.set_xscale("log")
    names = {s["budget_size"]: s["budget"] for s in summary}
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"all\n({n:,})" if names[n] == "all" else f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labeled training examples (log scale)" if ax.get_xscale() == "log" else "labeled training examples")
    ax.set_ylabel(f"test {metric} (best dev epoch)" if evaluated(setup) == "test" else f"dev {metric} (last epoch)")
    ax.set_title(f"{setup['name']}: data efficiency ({len(setup['seeds'])} seeds, mean ± std)")
    ax.grid(True, alpha=0.35)
    ax.legend(loc="best", frameon=True, framealpha=0.9, fontsize=9)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_learning_curves(rows: list[dict], setup: dict, budget: str, out_png: Path) -> Path | None:
    """Dev metric per epoch at one budget: scratch against each transferred method, mean ± std over seeds."""
    metric = setup["task"]["metric"]
    curves: dict[str, list[list[float]]] = {}
    xs: list[float] = []
    for r in rows:
        if r["budget"] == budget and r["kind"] not in ("pipeline", "knn"):  # neither trains over epochs
            curves.setdefault(entry_label(r, setup), []).append([e[metric] for e in r["epochs"]])
            xs = max(xs, [e["epoch"] for e in r["epochs"]], key=len)  # a run cut by max_steps ends mid-epoch
    if not curves:
        return None
    size = setup["budget_sizes"][budget]
    where = f"all {size}" if budget == "all" else budget
    return plot_mean_std(curves, out_png, xlabel="epoch", ylabel=f"dev {metric}", xs=xs,
                         title=f"{setup['name']}: learning curves at {where} labels")


# ------------------------------------------------------------------------------------------------ report


def _setup_lines(setup: dict, rows: list[dict]) -> list[str]:
    t = setup["task"]
    counts = setup.get("class_counts")
    balance = ""
    if counts:
        total = sum(counts.values())
        balance = "; " + ", ".join(f"{k}: {v / total:.0%}" for k, v in counts.items())
    split = (f"selected on dev `{t['dev']}` ({t['dev_size']:,} examples), reported on test `{t['test']}` "
             f"({t['test_size']:,} examples)" if "test" in t else f"evaluated on `{t['dev']}` ({t['dev_size']:,} "
                                                                   f"examples)")
    lines = [f"Task: {t['task']} on `{t['train']}` ({t['train_size']:,} examples{balance}), {split}; headline "
             f"metric **{t['metric']}**, also {', '.join(t['metrics'][1:]) or 'nothing else'}."]
    for c in setup["checkpoints"]:
        lines.append(f"Checkpoint `{c['name']}`: `{c['path']}` ({c['summary']}).")
    for m in setup["methods"]:
        settings = ", ".join(f"{k}={v}" for k, v in m["settings"].items())
        lines.append(f"Method `{m['label']}` ({m['method']}): {settings}.")
    budgets = ", ".join(f"all ({setup['budget_sizes'][b]:,})" if b == "all" else b for b in setup["budgets"])
    lines.append(f"Label budgets: {budgets}, each a stratified sample drawn per seed; seeds: "
                 f"{', '.join(map(str, setup['seeds']))}.")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"{len(rows)} runs, {total / 60:.1f} minutes of training in total. Reproduce with "
                 f"`transferlab compare {setup['spec']} --out OUT`; each run is one row of `results.jsonl`.")
    return lines


def _md_inline(text: str) -> str:
    """The two inline Markdown forms the report uses (**bold**, `code`) as HTML."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render(setup: dict, rows: list[dict], summary: list[dict], paragraphs: list[str], images: list[Path]):
    """(report.md text, self-contained report.html text)."""
    title = f"Transfer comparison: {setup['name']}"
    md = [f"# {title}", "", "## Conclusion", ""]
    htm = [f"<h1>{html.escape(title)}</h1>", "<h2>Conclusion</h2>"]
    for p in paragraphs:
        md += [p, ""]
        htm.append(f"<p>{_md_inline(p)}</p>")
    md += ["## Results", ""]
    htm.append("<h2>Results</h2>")
    for caption, header, body in tables(summary, setup) + confusion_tables(rows, setup):
        md += [f"**{caption}**", "", markdown_table(header, body), ""]
        htm.append(f"<table><caption>{html.escape(caption)}</caption><tr>"
                   + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                   + "</table>")
    md += ["## Plots", ""]
    htm.append("<h2>Plots</h2>")
    for img in images:
        alt = img.stem.replace("_", " ")
        md += [f"![{alt}]({img.name})", ""]
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        htm.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>')
    md += ["## Setup", ""] + [f"- {line}" for line in _setup_lines(setup, rows)] + [""]
    htm.append("<h2>Setup</h2><ul>" + "".join(f"<li>{_md_inline(x)}</li>" for x in _setup_lines(setup, rows))
               + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
             "text-align:right}td:first-child,th:first-child{text-align:left}caption{font-weight:bold;"
             "text-align:left;padding:.3em 0}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}")
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(htm) + "\n</body></html>\n")
    return "\n".join(md), page


def write_all(out: Path, setup: dict, rows: list[dict]) -> dict:
    """Write summary.csv, the plots, report.md and report.html. Returns the summary, the printed table,
    the conclusion paragraphs and the written files."""
    summary = summarize(rows, setup)
    paragraphs = conclusions(summary, setup)
    files = [write_text(out / SUMMARY, summary_csv(summary))]
    images = [plot_data_efficiency(summary, setup, out / EFFICIENCY_PNG)]
    for budget in setup["budgets"]:
        curve = plot_learning_curves(rows, setup, budget, out / CURVE_PNG.format(budget=budget))
        if curve is not None:
            images.append(curve)
    md, page = render(setup, rows, summary, paragraphs, images)
    files += images + [write_text(out / REPORT_MD, md), write_text(out / REPORT_HTML, page)]
    printed = "\n\n".join(f"{caption}\n{markdown_table(header, body)}"
                          for caption, header, body in tables(summary, setup)[:2])
    return {"summary": summary, "conclusion": paragraphs, "files": files, "table": printed}
