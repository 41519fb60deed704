#!/usr/bin/env bash
# The self-supervised image experiment of docs/results/ssl/README.md: SimCLR and BYOL (ResNet-20, resnet-mini, the
# architecture of the supervised-MNIST checkpoint) and MAE (vit-tiny) pretrained on the 4,708 PneumoniaMNIST
# training images (labels ignored by the objectives; the kNN monitor reads them), each for about 30 CPU-minutes
# on one core, then the transfer grid of examples/compare_pneumonia_ssl.yaml (scratch, supervised-MNIST, SimCLR,
# BYOL, MAE x kNN / linear probe (logistic regression) / fine-tuning x budgets 10/50/100/500/all x 3 seeds,
# selected on val, reported on test). Re-running skips finished work (pretraining resumes, the grid skips finished runs).
#
# Usage: [T="python -m transferlab"] OMP_NUM_THREADS=1 taskset -c 1 scripts/ssl_experiment.sh [STEP]...
# STEP: simclr, byol, mae, grid_early, grid_byol, grid (no argument: everything in order, on one core). As run for
# the results: `taskset -c 1 ... simclr byol grid_byol` and `taskset -c 0 ... mae grid_early`, then `grid`.
# The supervised-MNIST checkpoint comes from scripts/images_experiment.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
DATA=${DATA:-../shared/data}
X="$DATA/pneumoniamnist/pneumoniamnist_reconstructed.npz"
W=runs/ssl
mkdir -p "$W"
timed() { local start=$SECONDS; /usr/bin/time -f "[cpu] %U s user + %S s sys, %e s wall: $*" "$@"; \
          echo "[wall] $(( SECONDS - start )) s: $*" >&2; }
# Same optimisation for every objective: batch 256, AdamW lr 1e-3, cosine schedule after 5% warm-up, weight decay
# 0.01; the monitor every 100 steps. Steps are sized to ~30 CPU-minutes from a 30-step pilot on this machine
# (SimCLR 1.3 s, BYOL 1.8 s, MAE 0.95 s of CPU per step, augmentation and monitor included).
common=(--data "$X" --batch-size 256 --lr 1e-3 --schedule cosine --warmup 0.05 --eval-every 100 --eval-batches 4
        --save-every 200 --resume auto --quiet)
simclr() { timed $T pretrain --objective simclr --model resnet-mini --steps "${SIMCLR_STEPS:-1300}" \
             --out "$W/pneumonia-simclr-resnet-mini" "${common[@]}"; }
byol() { timed $T pretrain --objective byol --model resnet-mini --steps "${BYOL_STEPS:-1000}" \
           --out "$W/pneumonia-byol-resnet-mini" "${common[@]}"; }
mae() { timed $T pretrain --objective mae --model vit-tiny --steps "${MAE_STEPS:-1800}" \
          --out "$W/pneumonia-mae-vit-tiny" "${common[@]}"; }
# The grid in two parts, so that it can start before the slowest pretraining (BYOL) ends: grid_early runs every
# cell but BYOL's (scratch, supervised MNIST, SimCLR, MAE) on one core; grid_byol runs BYOL's cells on the other once
# its checkpoint exists (no scratch: scratch is shared and runs in grid_early). Both are the full spec with
# checkpoints (and scratch) left out, so their runs have the full spec's fingerprints, and `grid` gathers their rows
# into the full spec's directory, trains nothing more and writes one report (run alone, it trains what is missing).
SPEC=examples/compare_pneumonia_ssl.yaml
part() {  # part NAME SED-EXPRESSIONS...: the full spec edited by sed, run into runs/compare/pneumonia-ssl-NAME
  local name=$1; shift
  mkdir -p runs/compare
  sed -e "s|^name: .*|name: pneumonia-ssl-$name|" -e "s|^out: .*|out: runs/compare/pneumonia-ssl-$name|" "$@" \
      "$SPEC" > "runs/compare/pneumonia-ssl-$name.yaml"
  timed $T compare "runs/compare/pneumonia-ssl-$name.yaml" --quiet
}
grid_early() { part early -e "/name: byol,/d"; }
grid_byol() { part byol -e "/name: mnist-supervised,/d" -e "/name: simclr,/d" -e "/name: mae,/d" -e "/^  - scratch$/d"; }
grid() {
  local full=runs/compare/pneumonia-ssl
  if [ ! -s "$full/results.jsonl" ]; then
    mkdir -p "$full"
    cat runs/compare/pneumonia-ssl-{early,byol}/results.jsonl > "$full/results.jsonl" 2>/dev/null || true
  fi
  timed $T compare "$SPEC" --quiet
}
for step in "${@:-simclr byol mae grid_early grid_byol grid}"; do
  for s in $step; do "$s"; done
done
