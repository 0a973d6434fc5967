#!/usr/bin/env bash
# RESULTS.md §9: cp-adam and FedAdam under the same differential-privacy noise on quickstart
# (per-client replies, each update clipped to norm 1, Gaussian noise of z clip norms on the
# clipped sum before the server method steps; epsilon from Opacus's RDP accountant at delta 1e-5).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
for z in 0.0 0.5 1.0; do
  for s in 0 1 2; do
    "$PY" docs/results/inprocess.py quickstart --seed "$s" --set reply-mode=per-client \
        --set clip-norm=1.0 --set dp-noise-multiplier="$z" --set server-optimizer=cp-adam \
        --out "runs/dp/cp-adam-z$z-s$s" > /dev/null
    "$PY" docs/results/inprocess.py quickstart --seed "$s" --set reply-mode=per-client \
        --set clip-norm=1.0 --set dp-noise-multiplier="$z" --set server-optimizer=adam \
        --set server-lr=0.1 --set 'server-options={"eps": 0.001, "betas": [0.9, 0.99]}' \
        --out "runs/dp/adam-z$z-s$s" > /dev/null
  done
done
