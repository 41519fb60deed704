#!/usr/bin/env bash
# The short CPU measurements of issue 20 (docs/results/cpuhour.md), one after another on one core:
#   1. a 16k WordPiece tokenizer and a corpus from ../shared/data/pretrain_corpus/wiki (2,326 articles);
#   2. Muon (trunk matrices) + AdamW (the rest) against AdamW alone: the tiny encoder, masked LM, 64x128 tokens a
#      step, the same seed, data order and learning rate, held-out loss every EVAL steps (metrics.jsonl has the time);
#   3. fine-tuning learning rates on SST-2 (2,000 training sentences drawn with seed 0, one epoch, the full dev set)
#      from the AdamW checkpoint of step 2, LRS x SEEDS.
# Usage: [STEPS=200 LRS="5e-5 1e-3" SEEDS="0"] /work/bin/oncore scripts/cpuhour_pilot.sh [WORKDIR]
# The defaults are what fitted the session that wrote it (a few CPU-minutes); more seeds and rates: set them.
# Re-running skips finished work. PYTHONPATH may point at a copy of src/, so edits made meanwhile do not reach it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
export PYTHONPATH=${PYTHONPATH:-src}
T="$PY -m transferlab"
DATA=${DATA:-../shared/data}
W=${1:-runs/cpuhour}
STEPS=${STEPS:-200}
EVAL=${EVAL:-50}
LR=${LR:-3e-3}
LRS=${LRS:-5e-5 1e-3}
SEEDS=${SEEDS:-0}
mkdir -p "$W"

[ -f "$W/tok/tokenizer.json" ] || $T tokenizer train --input "$DATA/pretrain_corpus/wiki" --kind wordpiece \
    --lowercase --vocab-size 16000 --out "$W/tok" --quiet
[ -f "$W/corpus/meta.json" ] || $T corpus prepare --input "$DATA/pretrain_corpus/wiki" --tokenizer "$W/tok" \
    --out "$W/corpus" --heldout-fraction 0.01 --quiet
for opt in adamw muon; do
  [ -d "$W/mlm-$opt/final" ] || $T pretrain --corpus "$W/corpus" --objective mlm --model tiny --steps "$STEPS" \
      --seq-len 128 --batch-size 64 --lr "$LR" --warmup 40 --eval-every "$EVAL" --eval-batches 10 --log-every 10 \
      --optimizer "$opt" --schedule linear --out "$W/mlm-$opt" --quiet
done

if [ ! -f "$W/sst2-2000/train.tsv" ]; then
  mkdir -p "$W/sst2-2000"
  $PY - "$DATA/sst2/train.tsv" "$W/sst2-2000/train.tsv" <<'PYEOF'
import random, sys
rows = open(sys.argv[1], encoding="utf-8").read().splitlines()
body = rows[1:]
random.Random(0).shuffle(body)
open(sys.argv[2], "w", encoding="utf-8").write("\n".join([rows[0]] + body[:2000]) + "\n")
PYEOF
fi
for lr in $LRS; do
  for seed in $SEEDS; do
    out="$W/ft-lr$lr-seed$seed"
    [ -f "$out/results.json" ] || $T finetune --init "$W/mlm-adamw/final" --train "$W/sst2-2000/train.tsv" \
        --dev "$DATA/sst2/dev.tsv" --epochs 1 --lr "$lr" --seed "$seed" --out "$out" --overwrite --quiet
  done
done
