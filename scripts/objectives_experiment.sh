#!/usr/bin/env bash
# Pretraining objectives compared by transfer (issue 4). Every objective pretrains on the same prepared corpus with
# the same budget in tokens seen (STEPS x BATCH x SEQ_LEN packed tokens); then each backbone, and a from-scratch
# twin of each architecture, is fine-tuned on MRPC and SST-2 over SEEDS. Re-running skips finished steps.
#
# Usage: CORPUS=runs/real/corpus scripts/objectives_experiment.sh [WORKDIR]   (default runs/objectives)
# CORPUS is a directory written by `transferlab corpus prepare` (scripts/real_experiment.sh makes runs/real/corpus).
# Knobs (environment): STEPS MODEL BATCH SEQ_LEN LR OBJECTIVES TASKS SEEDS FT_EPOCHS (overrides both tasks' epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
CORPUS=${CORPUS:-runs/real/corpus}
W=${1:-runs/objectives}
STEPS=${STEPS:-3000}
MODEL=${MODEL:-mini}
BATCH=${BATCH:-64}
SEQ_LEN=${SEQ_LEN:-128}
LR=${LR:-1e-3}
OBJECTIVES=${OBJECTIVES:-mlm plm mpnet electra word2vec elmo}
TASKS=${TASKS:-mrpc sst2}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$W/ft"

family() {  # the architecture an objective pretrains: its scratch twin is shared by objectives of one family
  $PY -c "from transferlab.objectives import OBJECTIVES; print(OBJECTIVES['$1'][0])"
}

for obj in $OBJECTIVES; do
  lr=$LR
  [ "$obj" = word2vec ] && lr=1e-2  # word vectors train with a far larger step (word2vec's own default is 0.025)
  [ -d "$W/pretrain-$obj/final" ] || $T pretrain --corpus "$CORPUS" --objective "$obj" --model "$MODEL" \
      --steps "$STEPS" --seq-len "$SEQ_LEN" --batch-size "$BATCH" --lr "$lr" --warmup 0.05 --save-every 250 \
      --log-every 50 --out "$W/pretrain-$obj" --resume auto --quiet
done

for task in $TASKS; do
  case $task in
    mrpc) extra=(--metrics accuracy,f1 --epochs "${FT_EPOCHS:-5}" --batch-size 32 --lr 1e-4) ;;
    sst2) extra=(--metrics accuracy --epochs "${FT_EPOCHS:-2}" --batch-size 64 --lr 1e-4) ;;
  esac
  for seed in $SEEDS; do
    for obj in $OBJECTIVES; do
      runs=("$obj:--init $W/pretrain-$obj/final")
      scratch="scratch_$(family "$obj")"
      runs+=("$scratch:--init scratch --like $W/pretrain-$obj/final")
      for r in "${runs[@]}"; do
        name=${r%%:*}
        out="$W/ft/$task-$name-$seed"
        [ -f "$out/results.json" ] && continue
        # shellcheck disable=SC2086
        $T finetune ${r#*:} --train "$DATA/$task/train.tsv" --dev "$DATA/$task/dev.tsv" --seed "$seed" \
            --warmup 0.1 --max-len 128 --quiet --overwrite --out "$out" "${extra[@]}"
      done
    done
  done
done
$PY scripts/summarise_finetunes.py "$W/ft" | tee "$W/summary.md"
