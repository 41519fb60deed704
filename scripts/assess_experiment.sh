#!/usr/bin/env bash
# Result 5 of issue 17 (docs/results/multitask/README.md): does `transferlab assess` rank checkpoints the way
# fine-tuning them does? For each image task, a compare grid fine-tunes every candidate checkpoint on 500 labels
# (3 seeds, plus scratch), then assess scores the same candidates from frozen features (LogME, kNN, linear probe)
# on the same 500 training labels, and reports the Kendall tau against the fine-tuned ranking and the time each took.
# Needs the canvas tasks (scripts/multitask_canvas.py npz --out runs/canvas) and the image checkpoints under runs/.
# Re-running skips finished fine-tuning runs. Usage: OMP_NUM_THREADS=1 taskset -c 1 scripts/assess_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
OUT=docs/results/multitask/assess
for task in ${TASKS:-pneumonia has3 count}; do
  spec=$OUT/$task.yaml
  start=$SECONDS
  $T compare "$spec" --quiet
  echo "[wall] $(( SECONDS - start )) s: compare $task" >&2
  ckpts=$(python3 -c "import yaml,sys; s=yaml.safe_load(open('$spec')); print(' '.join(f\"{c['name']}={c['path']}\" for c in s['checkpoints']))")
  start=$SECONDS
  $T assess --task "$spec" --checkpoints $ckpts "scratch:runs/images/mnist-resnet-mini/final" \
    --against "runs/assess/$task/results.jsonl" --max-train 500 --out "$OUT/$task" --quiet
  echo "[wall] $(( SECONDS - start )) s: assess $task" >&2
  cp "runs/assess/$task/report.md" "$OUT/$task/compare_report.md"
done
