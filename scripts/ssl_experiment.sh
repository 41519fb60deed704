#!/usr/bin/env bash
# The self-supervised image experiment of docs/results/ssl/README.md: SimCLR and BYOL (ResNet-20, resnet-mini, the
# architecture of the supervised-MNIST checkpoint) and MAE (vit-tiny) pretrained on the 4,708 PneumoniaMNIST
# training images (labels ignored by the objectives; the kNN monitor reads them), each for about 30 CPU-minutes
# on one core, then the transfer grid of examples/compare_pneumonia_ssl.yaml (scratch, supervised-MNIST, SimCLR,
# BYOL, MAE x kNN / linear probe (logistic regression) / fine-tuning, selected on val, reported on test) at 10 and
# 100 labels x 3 seeds, and at all labels with one seed. Re-running skips finished work (pretraining resumes, the
# grid skips finished runs).
#
# Usage: [T="python -m transferlab"] OMP_NUM_THREADS=1 taskset -c 1 scripts/ssl_experiment.sh [STEP]...
# STEP: simclr, byol, mae, grid, grid_all (no argument: everything in order). As run for the results: each step
# alone through /work/bin/oncore (one core, one thread), one after the other; ALL_SEEDS=3 grid_all adds seeds 1-2.
# The supervised-MNIST checkpoint comes from scripts/images_experiment.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
DATA=${DATA:-$(realpath ../shared/data)}  # absolute: --resume compares the --data a run was started with
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
# The transfer grid, cut to the CPU time left on the shared machine (docs/results/ssl/README.md says what was cut):
# grid runs examples/compare_pneumonia_ssl.yaml (every checkpoint and method at 10 and 100 labels, 3 seeds);
# grid_all runs the same spec at all 4,708 labels with seed 0 only (runs/compare/pneumonia-ssl-all). Runs are
# fingerprinted by their own settings, not by the spec's lists, so adding budgets or seeds later reuses these.
SPEC=${SPEC:-examples/compare_pneumonia_ssl.yaml}
grid() { timed $T compare "$SPEC" --workers 1 --threads 1 --quiet; }
grid_all() {
  mkdir -p runs/compare
  sed -e "s|^name: .*|name: pneumonia-ssl-all|" -e "s|^out: .*|out: runs/compare/pneumonia-ssl-all|" \
      -e "s|^budgets: .*|budgets: [all]|" -e "s|^seeds: .*|seeds: ${ALL_SEEDS:-1}|" "$SPEC" > runs/compare/pneumonia-ssl-all.yaml
  timed $T compare runs/compare/pneumonia-ssl-all.yaml --workers 1 --threads 1 --quiet
}
for step in "${@:-simclr byol mae grid grid_all}"; do
  for s in $step; do "$s"; done
done
