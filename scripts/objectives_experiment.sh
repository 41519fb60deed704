#!/usr/bin/env bash
# Pretraining objectives compared by transfer (issue 4). Every objective pretrains on the same prepared corpus with
# the same budget in tokens seen (STEPS x BATCH sequences of SEQ_LEN packed tokens); then `transferlab compare`
# fine-tunes each backbone, and a from-scratch twin of each architecture, on every task in TASKS over SEEDS at the
# label budgets in BUDGETS. The encoder-decoders (bart, mass) are also fine-tuned on en->fr word translation
# (`transferlab seq2seq train`, BLEU and chrF) against a from-scratch encoder-decoder. Re-running skips finished work.
#
# Usage: CORPUS=runs/real/corpus scripts/objectives_experiment.sh [WORKDIR]   (default runs/objectives)
# CORPUS is a directory written by `transferlab corpus prepare` (scripts/real_experiment.sh makes runs/real/corpus).
# Knobs (environment): STEPS MODEL BATCH SEQ_LEN LR OBJECTIVES TASKS SEEDS BUDGETS STAGES ("pretrain compare seq2seq").
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
CORPUS=${CORPUS:-runs/real/corpus}
W=${1:-runs/objectives}
STEPS=${STEPS:-800}
MODEL=${MODEL:-tiny}
BATCH=${BATCH:-32}
SEQ_LEN=${SEQ_LEN:-128}
LR=${LR:-2e-3}
OBJECTIVES=${OBJECTIVES:-mlm electra plm mpnet clm bart mass word2vec elmo}
TASKS=${TASKS:-sst2 mrpc}
SEEDS=${SEEDS:-3}
BUDGETS=${BUDGETS:-1000}
STAGES=${STAGES:-pretrain compare seq2seq}
mkdir -p "$W"

stage() { [[ " $STAGES " == *" $1 "* ]]; }

if stage pretrain; then
  for obj in $OBJECTIVES; do
    lr=$LR
    [ "$obj" = word2vec ] && lr=1e-2  # word vectors train with a far larger step (word2vec's own default is 0.025)
    [ -d "$W/pretrain-$obj/final" ] && continue
    start=$(date +%s)
    $T pretrain --corpus "$CORPUS" --objective "$obj" --model "$MODEL" --steps "$STEPS" --seq-len "$SEQ_LEN" \
        --batch-size "$BATCH" --lr "$lr" --warmup 0.05 --eval-every "$STEPS" --save-every 200 --log-every 50 \
        --optimizer adamw --schedule linear --out "$W/pretrain-$obj" --resume auto --quiet
    echo "$obj $(( $(date +%s) - start ))" >> "$W/pretrain_wall_s.txt"
  done
fi

if stage compare; then
  for task in $TASKS; do
    metric=accuracy  # MRPC too: its F1 is 81.2 for a model that always says "paraphrase"
    spec="$W/compare_$task.yaml"
    {
      echo "name: objectives-$task"
      echo "out: $W/compare-$task"
      echo "checkpoints:"
      for obj in $OBJECTIVES; do echo "  - {name: $obj, path: $W/pretrain-$obj/final}"; done
      echo "task: {train: $DATA/$task/train.tsv, dev: $DATA/$task/dev.tsv, metric: $metric}"
      echo "methods: [scratch, finetune]"
      echo "budgets: [$(echo "$BUDGETS" | sed 's/ /, /g')]"
      echo "seeds: $SEEDS"
      # the recipe of examples/compare_*.yaml: a tiny model needs lr 1e-3 and ~300 steps to leave chance
      echo "train: {epochs: 10, min_epoch_size: 1000, max_steps: 1500, lr: 1e-3, batch_size: 32, max_len: 128}"
    } > "$spec"
    $T compare "$spec" --quiet
  done
fi

if stage seq2seq; then
  # en->fr word translation: the encoder-decoders against a randomly initialised twin, same settings.
  for obj in $OBJECTIVES; do
    case $obj in bart|mass) ;; *) continue ;; esac
    for init in pretrained scratch; do
      out="$W/seq2seq/$obj-$init"
      [ -f "$out/results.json" ] && continue
      if [ $init = pretrained ]; then src=(--init "$W/pretrain-$obj/final"); else src=(--init scratch --like "$W/pretrain-$obj/final"); fi
      $T seq2seq train "${src[@]}" --train "$DATA/en_fr/muse_en-fr.tsv.gz" --no-header \
          --source-col 0 --target-col 1 --max-examples 20000 --dev-fraction 0.05 --epochs 3 --batch-size 64 \
          --lr 5e-4 --bleu-tokenize char --max-target-len 16 --seed 0 --quiet --overwrite --out "$out"
    done
  done
fi
