"""Mean ± std over seeds of fine-tuning runs named TASK-INIT-SEED (each with results.json), as a Markdown table,
plus the gain of pretrained over scratch per task and metric, set against the seed-to-seed spread."""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

root = Path(sys.argv[1])
groups: dict = defaultdict(lambda: defaultdict(list))
best: dict = defaultdict(list)
for res in sorted(root.glob("*/results.json")):
    task, init, _seed = res.parent.name.rsplit("-", 2)
    r = json.loads(res.read_text())
    for metric, value in r["final"].items():
        if metric != "loss":
            groups[(task, init)][metric].append(value)
    best[(task, init)].append(r.get("best_epoch"))


def std(v):
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


print("| task | init | seeds | dev metrics at the last epoch (mean ± std over seeds) | best epochs |")
print("|---|---|---|---|---|")
for (task, init), metrics in sorted(groups.items()):
    cells = ", ".join(f"{m} {100 * np.mean(v):.1f} ± {100 * std(v):.1f}" for m, v in metrics.items())
    print(f"| {task} | {init} | {len(next(iter(metrics.values())))} | {cells} | {best[(task, init)]} |")
print()
for task in sorted({t for t, _ in groups}):
    pre, scr = groups.get((task, "pretrained")), groups.get((task, "scratch"))
    if not pre or not scr:
        continue
    for m in pre:
        gain = np.mean(pre[m]) - np.mean(scr[m])
        spread = max(std(pre[m]), std(scr[m]))
        if min(len(pre[m]), len(scr[m])) < 2:
            print(f"- {task} {m}: pretrained - scratch = {100 * gain:+.1f} points (one seed: no spread to compare)")
            continue
        verdict = "more than" if abs(gain) > 2 * spread else "within"
        print(f"- {task} {m}: pretrained - scratch = {100 * gain:+.1f} points, {verdict} two seed spreads "
              f"(2 x {100 * spread:.1f})")
