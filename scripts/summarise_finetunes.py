"""Mean ± std over seeds of fine-tuning runs named TASK-INIT-SEED (each with results.json), as a Markdown table."""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

root = Path(sys.argv[1])
groups: dict = defaultdict(lambda: defaultdict(list))
for res in sorted(root.glob("*/results.json")):
    task, init, _seed = res.parent.name.rsplit("-", 2)
    r = json.loads(res.read_text())
    for metric, value in r["final"].items():
        if metric != "loss":
            groups[(task, init)][metric].append(value)
print("| task | init | seeds | " + "metric (final epoch, GLUE dev) |")
print("|---|---|---|---|")
for (task, init), metrics in sorted(groups.items()):
    cells = ", ".join(f"{m} {100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1) if len(v) > 1 else 0:.1f}"
                      for m, v in metrics.items())
    print(f"| {task} | {init} | {len(next(iter(metrics.values())))} | {cells} |")
