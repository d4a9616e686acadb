#!/usr/bin/env bash
# The reduced synthetic runs behind docs/evaluation.md's "held-out bounds redone" table
# (issue #12). Reduced to fit a CPU shared with three training runs: 1500 steps instead of
# 6000 (and KL annealing over 500 steps instead of 2000), 300 test sentences, 2 MELBO repeats, no BLEU.
# ~4 min of training per model and 1-1.5 min of evaluation each, OMP_NUM_THREADS=1.
set -euo pipefail
export OMP_NUM_THREADS=1
smim train --corpus synthetic --objective mim --embedding-dim 64 --hidden-dim 128 --latent-dim 8 \
    --max-steps 1500 --batch-size 20 --eval-max-sentences 500 --eval-every 500 --out runs/syn-mim8-1500
smim train --corpus synthetic --objective vae --kl-annealing linear --kl-anneal-steps 500 \
    --embedding-dim 64 --hidden-dim 128 --latent-dim 8 \
    --max-steps 1500 --batch-size 20 --eval-max-sentences 500 --eval-every 500 --out runs/syn-vae8-1500
for m in mim8 vae8; do
  smim evaluate runs/syn-$m-1500 --max-sentences 300 --no-bleu --repeats 2 --iwae-k 100 \
      --json docs/report-synthetic/heldout-syn-$m-1500.json --per-sentence syn-$m-1500.npz
done
