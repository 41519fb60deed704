#!/usr/bin/env bash
# The real experiment of docs/results/README.md: pretrain on ../shared/data/pretrain_corpus (+ the unlabeled sentences of
# the SST-2 and MRPC training sets), continue on those task sentences alone, then run the transfer grids of examples/compare_sst2.yaml and compare_mrpc.yaml
# (6 methods x budgets 100/300/1000/all x 3 seeds). Re-running skips finished work (the grids resume run by run).
# Usage: [STEPS=N LR=X MODEL=P TAPT_STEPS=N TASKS="sst2 mrpc"] scripts/real_experiment.sh [WORKDIR] (default runs/real; the
# example specs read runs/real/tapt-tiny/final, so another WORKDIR or MODEL needs specs of its own). The two
# grids can run side by side, one per core: TASKS=sst2 OMP_NUM_THREADS=1 taskset -c 0 ... and TASKS=mrpc on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
W=${1:-runs/real}
STEPS=${STEPS:-9000}  # 70 minutes on one core of this CPU (docs/results/README.md)
LR=${LR:-3e-3}
MODEL=${MODEL:-tiny}
TAPT_STEPS=${TAPT_STEPS:-2000}  # 0: stop after the general pretraining
TASKS=${TASKS-sst2 mrpc}  # empty: no transfer grids
mkdir -p "$W"

if [ ! -f "$W/task_text.txt" ]; then
  # Unlabeled task text (train splits only, labels dropped): domain-adaptive pretraining.
  $PY - "$DATA" "$W/task_text.txt" <<'PYEOF'
import sys
from transferlab.data.labeled import read_labeled
data, out = sys.argv[1], sys.argv[2]
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for task in ("sst2", "mrpc"):
        d = read_labeled(f"{data}/{task}/train.tsv")
        for i, a in enumerate(d.texts_a):
            f.write(a + "\n")
            if d.texts_b:
                f.write(d.texts_b[i] + "\n")
        f.write("\n\n")
import os; os.replace(out + ".tmp", out)
PYEOF
fi
[ -f "$W/tok/tokenizer.json" ] || $T tokenizer train --input "$DATA/pretrain_corpus" "$W/task_text.txt" \
    --kind wordpiece --lowercase --vocab-size 16000 --out "$W/tok" --quiet
[ -f "$W/corpus/meta.json" ] || $T corpus prepare --input "$DATA/pretrain_corpus" "$W/task_text.txt" \
    --tokenizer "$W/tok" --out "$W/corpus" --quiet
[ -d "$W/pretrain-$MODEL/final" ] || /usr/bin/time -v $T pretrain --corpus "$W/corpus" --objective mlm \
    --model "$MODEL" --steps "$STEPS" --seq-len 128 --batch-size 64 --lr "$LR" --warmup 300 --save-every 500 \
    --optimizer adamw --schedule linear \
    --eval-every 500 --log-every 50 --out "$W/pretrain-$MODEL" --resume auto 2> >(tee "$W/pretrain-$MODEL.log" >&2)

# Task-adaptive pretraining (Gururangan et al. 2020): the same model continues on the task text alone.
[ "$TAPT_STEPS" -gt 0 ] || exit 0
[ -f "$W/corpus-task/meta.json" ] || $T corpus prepare --input "$W/task_text.txt" --tokenizer "$W/tok" \
    --out "$W/corpus-task" --quiet
[ -d "$W/tapt-$MODEL/final" ] || /usr/bin/time -v $T pretrain --init "$W/pretrain-$MODEL/final" \
    --corpus "$W/corpus-task" --objective mlm --steps "$TAPT_STEPS" --seq-len 128 --batch-size 64 --lr 1e-3 --warmup 100 \
    --optimizer adamw --schedule linear \
    --save-every 500 --eval-every 500 --log-every 50 --out "$W/tapt-$MODEL" --resume auto \
    2> >(tee "$W/tapt-$MODEL.log" >&2)

for task in $TASKS; do
  $T compare "examples/compare_$task.yaml"
done
