#!/usr/bin/env bash
# The real experiment of docs/results/README.md: pretrain on ../shared/data/pretrain_corpus (+ the unlabeled sentences of
# the SST-2 and MRPC training sets), then fine-tune pretrained vs scratch on MRPC and SST-2, 3 seeds each.
# Re-running skips finished steps. Usage: [STEPS=N LR=X MODEL=P TASKS="mrpc sst2" SEEDS="0 1 2"
# INITS="pretrained scratch"] scripts/real_experiment.sh [WORKDIR] (default runs/real). Lanes with disjoint
# TASKS/SEEDS/INITS can run side by side, one per core: OMP_NUM_THREADS=1 taskset -c K ...
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/transferlab
PY=.venv/bin/python
DATA=${DATA:-../shared/data}
W=${1:-runs/real}
STEPS=${STEPS:-2200}  # one hour on one core of this CPU (docs/results/README.md)
LR=${LR:-1e-3}
MODEL=${MODEL:-mini}
TASKS=${TASKS:-mrpc sst2}
SEEDS=${SEEDS:-0 1 2}
INITS=${INITS:-pretrained scratch}
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
[ -d "$W/pretrain/final" ] || /usr/bin/time -v $T pretrain --corpus "$W/corpus" --objective mlm --model "$MODEL" \
    --steps "$STEPS" --seq-len 128 --batch-size 64 --lr "$LR" --warmup 0.05 --save-every 250 --eval-every 500 \
    --log-every 50 --out "$W/pretrain" --resume auto 2> >(tee "$W/pretrain.log" >&2)

for task in $TASKS; do
  case $task in
    mrpc) extra=(--metrics accuracy,f1 --epochs 5 --batch-size 32 --lr 1e-4) ;;
    sst2) extra=(--metrics accuracy --epochs 1 --batch-size 64 --lr 1e-4) ;;
  esac
  for seed in $SEEDS; do
    for init in $INITS; do
      out="$W/ft/$task-$init-$seed"
      [ -f "$out/results.json" ] && continue
      if [ $init = pretrained ]; then src=(--init "$W/pretrain/final"); else src=(--init scratch --like "$W/pretrain/final"); fi
      $T finetune "${src[@]}" --train "$DATA/$task/train.tsv" --dev "$DATA/$task/dev.tsv" --seed $seed \
          --warmup 0.1 --max-len 128 --quiet --overwrite --out "$out" "${extra[@]}"
    done
  done
done
$PY scripts/summarise_finetunes.py "$W/ft"
