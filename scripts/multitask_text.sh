#!/usr/bin/env bash
# The text results of issue 17 (docs/results/multitask/README.md, "GLUE tasks"): a tiny masked-LM encoder pretrained
# on ../shared/data/pretrain_corpus for STEPS steps (scripts/real_experiment.sh's recipe, without task-adaptive
# pretraining), then SST-2 + MRPC + STS-B jointly vs alone (docs/results/multitask/glue/spec.yaml) and STS-B -> MRPC
# intermediate transfer vs direct (docs/results/multitask/intermediate/spec.yaml). Re-running skips finished work.
# Usage: [STEPS=3500 T="python -m transferlab"] /work/bin/oncore scripts/multitask_text.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
STEPS=${STEPS:-3500} TAPT_STEPS=0 TASKS= T="$T" PY="${PY:-.venv/bin/python}" scripts/real_experiment.sh runs/mt-text
timed() { /usr/bin/time -f "[cpu] %U s user + %S s sys, %e s wall: $*" "$@"; }
timed $T multitask docs/results/multitask/glue/spec.yaml --quiet
timed $T compare docs/results/multitask/intermediate/spec.yaml --quiet
