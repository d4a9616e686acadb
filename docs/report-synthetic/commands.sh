#!/usr/bin/env bash
# How docs/report-synthetic was made (CPU, OMP_NUM_THREADS=1; ~2 min per training run,
# ~1 min for the report). The corpus `synthetic` is generated on first use.
set -euo pipefail
export OMP_NUM_THREADS=1
smim train --corpus synthetic --objective mim --embedding-dim 64 --hidden-dim 128 --latent-dim 8 \
    --max-steps 6000 --batch-size 20 --eval-max-sentences 500 --eval-every 1000 --out runs/syn-mim8
smim train --corpus synthetic --objective vae --kl-annealing linear --kl-anneal-steps 2000 \
    --embedding-dim 64 --hidden-dim 128 --latent-dim 8 \
    --max-steps 6000 --batch-size 20 --eval-max-sentences 500 --eval-every 1000 --out runs/syn-vae8
smim report runs/syn-mim8 runs/syn-vae8 --out docs/report-synthetic
