#!/usr/bin/env bash
# Issue 20's recipe sweep (docs/results/cpuhour.md, "The recipe sweep"): masked-LM pretraining recipes for the tiny
# encoder at equal CPU time (about 10 CPU-minutes each, one thread), on the corpus of scripts/real_experiment.sh
# (../shared/data/pretrain_corpus + the SST-2/MRPC training sentences, 16k WordPiece), each arm's held-out loss in
# RUN/metrics.jsonl, then SST-2 at 1,000 labels fine-tuned from every checkpoint (3 seeds, compare's grid).
# Usage:
#   scripts/cpuhour_sweep.sh pretrain      # claims the next arm not yet taken and runs it, until none is left;
#                                          # start one per core: /work/bin/oncore scripts/cpuhour_sweep.sh pretrain
#   scripts/cpuhour_sweep.sh downstream    # the SST-2 grid over every finished arm (2 workers)
#   scripts/cpuhour_sweep.sh table         # the results table (docs/results/cpuhour.md)
# Env: W (work dir, default runs/cpuhour-sweep), CORPUS (default runs/mt-text/corpus, made by
# scripts/multitask_text.sh or real_experiment.sh), ARMS (names to run, default all). A crashed arm resumes from its
# last step checkpoint: delete W/NAME.claim and run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
T="$PY -m transferlab"
W=${W:-runs/cpuhour-sweep}
CORPUS=${CORPUS:-runs/mt-text/corpus}
mkdir -p "$W"

# name | pretrain flags (later flags win over the common ones below). Equal time: the tiny encoder's step of 64 x 128
# tokens costs the same under every optimizer and schedule here (0.40 CPU-s), so those arms run 1,500 steps; batch
# 32 costs half a step of 64, so it gets twice the steps. Arms whose step costs differ (another size or objective)
# run on a budget of CPU-minutes instead (--time-budget). The measured CPU time of each arm is in W/NAME.time.
ARM_TABLE="
default|--batch-size 32 --lr 1e-3 --steps 3000
adamw-linear|--lr 3e-3 --steps 1500
adamw-wsd|--lr 3e-3 --steps 1500 --schedule wsd
muon-linear|--lr 3e-3 --steps 1500 --optimizer muon
muon-wsd|--lr 3e-3 --steps 1500 --optimizer muon --schedule wsd
muon-wsd-6e-3|--lr 6e-3 --steps 1500 --optimizer muon --schedule wsd
muon-wsd-b128|--lr 3e-3 --steps 750 --batch-size 128 --optimizer muon --schedule wsd
muon-wsd-seq64|--lr 3e-3 --steps 1500 --batch-size 128 --seq-len 64 --optimizer muon --schedule wsd
mini-muon-wsd-3e-3|--model mini --lr 3e-3 --time-budget 10 --budget-clock cpu --optimizer muon --schedule wsd
mini-muon-wsd-1.5e-3|--model mini --lr 1.5e-3 --time-budget 10 --budget-clock cpu --optimizer muon --schedule wsd
clm-muon-wsd|--objective clm --lr 3e-3 --time-budget 10 --budget-clock cpu --optimizer muon --schedule wsd
electra-muon-wsd|--objective electra --lr 3e-3 --time-budget 10 --budget-clock cpu --optimizer muon --schedule wsd
"
# The arms were run in two rounds: the first five, then (Muon + wsd having won them) the variations on that base.
# muon-wsd-b128, muon-wsd-seq64 and electra-muon-wsd were queued and not run (docs/results/cpuhour.md says why).
ARMS=${ARMS:-$(echo "$ARM_TABLE" | cut -d'|' -f1 | xargs)}

flags_of() { echo "$ARM_TABLE" | grep "^$1|" | cut -d'|' -f2; }

case "${1:-}" in
pretrain)
  for name in $ARMS; do
    [ -d "$W/$name/final" ] && continue
    mkdir "$W/$name.claim" 2>/dev/null || continue  # another worker has it
    # shellcheck disable=SC2046
    /usr/bin/time -f "%U s user, %S s sys, %e s wall" -o "$W/$name.time" \
      $T pretrain --corpus "$CORPUS" --objective mlm --model tiny --seq-len 128 --batch-size 64 --warmup 0.06 \
        --optimizer adamw --schedule linear \
        --eval-every 250 --eval-batches 20 --log-every 50 --save-every 250 --seed 0 \
        $(flags_of "$name") --out "$W/$name" --resume auto --quiet
  done ;;
downstream)
  spec="$W/sst2-1000.yaml"
  {
    echo "# written by scripts/cpuhour_sweep.sh downstream: SST-2 at 1,000 labels from every arm of the sweep"
    echo "name: cpuhour-sweep-sst2"
    echo "out: $W/compare-sst2"
    echo "checkpoints:"
    for name in $ARMS; do
      [ -d "$W/$name/final" ] && echo "  - {name: $name, path: $W/$name/final}"
    done
    cat <<'YAML'
task:
  train: ../shared/data/sst2/train.tsv
  dev: ../shared/data/sst2/dev.tsv
  metric: accuracy
methods: [finetune]
budgets: [1000]
seeds: 3
train:
  epochs: 10
  min_epoch_size: 1000
  max_steps: 1500
  lr: 1e-3
  batch_size: 32
  max_len: 128
YAML
  } > "$spec"
  $T compare "$spec" --workers 2 --threads 1 --quiet ;;
table)  # the markdown table of docs/results/cpuhour.md: time, tokens, held-out loss and SST-2 of every arm
  $PY - "$W" $ARMS <<'PYEOF'
import csv, json, sys
from pathlib import Path
w, arms = Path(sys.argv[1]), sys.argv[2:]
sst2 = {}
summary = w / "compare-sst2" / "summary.csv"
if summary.is_file():
    for row in csv.DictReader(summary.open()):
        if row["method"] == "finetune":
            sst2[row["checkpoint"]] = f"{float(row['mean']):.3f} ± {float(row['std']):.3f}"
print("| arm | objective | steps x tokens | CPU-min | held-out loss | SST-2 dev @1k |")
print("|---|---|---:|---:|---:|---:|")
for arm in arms:
    run = w / arm
    if not (run / "final").is_dir():
        continue
    cfg = json.loads((run / "run.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    last = [r for r in rows if r.get("split") == "eval"][-1]
    steps = max(r["step"] for r in rows)
    user = float((w / f"{arm}.time").read_text().split()[0]) / 60
    print(f"| {arm} | {cfg['objective']} | {steps:,} x {cfg['batch_size']}x{cfg['seq_len']} | {user:.1f} | "
          f"{last['loss']:.3f} | {sst2.get(arm, 'not run')} |")
PYEOF
  ;;
*)
  echo "usage: scripts/cpuhour_sweep.sh pretrain|downstream|table" >&2; exit 2 ;;
esac
