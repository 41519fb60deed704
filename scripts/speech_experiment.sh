#!/usr/bin/env bash
# The speech experiment of docs/results/speech/README.md: an espeak-ng corpus (4.6 h unlabeled sentences, spoken
# digits from 80 other speakers), masked-frames and APC pretraining of audio-mini (a 6,000-step schedule of 32 x 2.56 s
# crops each, one core, saved every 1,000 steps), then the spoken-digit grid of examples/compare_speech.yaml, which
# fine-tunes the step-3,000 saves of that schedule (where the recorded experiment's CPU budget stopped).
# Re-running skips finished work (the corpus, finished pretraining, finished grid cells).
# Usage: [STEPS=N] scripts/speech_experiment.sh      (needs espeak-ng: apt-get install -y espeak-ng)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-.venv/bin/transferlab}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../data/speech}
STEPS=${STEPS:-6000}
W=runs/speech
mkdir -p "$W"
export OMP_NUM_THREADS=1
export TRANSFERLAB_CACHE=${TRANSFERLAB_CACHE:-$DATA/../speech_cache}  # log-mel features, computed once
time_step() { local start=$SECONDS; "$@"; echo "[wall] $(( SECONDS - start )) s: $*" >&2; }

[ -f "$DATA/README.md" ] || time_step taskset -c 1 $PY scripts/make_speech_data.py --out "$DATA" --unlabeled-hours 4
# the two objectives side by side, one core each
for objective in masked-frames apc; do
  core=$([ "$objective" = apc ] && echo 1 || echo 0)
  [ -f "$W/$objective/final/complete.json" ] || time_step taskset -c "$core" $T pretrain --objective "$objective" \
    --data "$DATA/unlabeled" --model audio-mini --steps "$STEPS" --batch-size 32 --seq-len 256 --eval-every 500 \
    --save-every 1000 --out "$W/$objective" --resume auto --quiet &
done
wait
time_step taskset -c 0 $T compare examples/compare_speech.yaml --quiet
