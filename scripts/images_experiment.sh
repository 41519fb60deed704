#!/usr/bin/env bash
# The image experiment of docs/results/README.md: supervised pretraining of a ResNet-20 (resnet-mini) on MNIST's
# 60,000 labeled digits (standing in for ImageNet), then the PneumoniaMNIST transfer grid of
# examples/compare_pneumonia.yaml (scratch / finetune / linear-probe / gradual-unfreeze / HOG pipeline x budgets
# 10/50/100/500/all x 3 seeds, selected on val, reported on test). Re-running skips finished work.
# Usage: [STEPS=N] OMP_NUM_THREADS=1 taskset -c 0 scripts/images_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/transferlab
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-3000}  # 6.4 epochs of MNIST at batch 128
W=runs/images
mkdir -p "$W"
time_step() { local start=$SECONDS; "$@"; echo "[wall] $(( SECONDS - start )) s: $*" >&2; }

time_step $T pretrain --objective supervised --data "$DATA/mnist" --model resnet-mini --steps "$STEPS" \
  --batch-size 128 --lr 2e-3 --warmup 0.05 --eval-every 500 --eval-batches 40 --save-every 500 \
  --out "$W/mnist-resnet-mini" --resume auto --quiet
time_step $T compare examples/compare_pneumonia.yaml --quiet
