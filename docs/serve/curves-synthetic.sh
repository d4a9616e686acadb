#!/usr/bin/env bash
# How docs/serve/curves-synthetic.png was made (one CPU thread each, about 5 minutes a run here,
# on a machine shared with other training jobs). The runs live outside the repository.
set -euo pipefail
for obj in mim vae ae; do
    OMP_NUM_THREADS=1 smim train --corpus synthetic --data-dir /tmp/cr/data --objective $obj \
        --embedding-dim 32 --hidden-dim 64 --latent-dim 8 --max-epochs 6 --patience 1 --eval-every 100 \
        --out /tmp/cr/syn-$obj --tensorboard --quiet
done
smim curves /tmp/cr/syn-mim /tmp/cr/syn-vae /tmp/cr/syn-ae --x epoch \
    --metrics loss,rec_per_sentence,active_units,lr \
    --label "sMIM (d=8)" --label "sVAE (d=8)" --label "AE (d=8)" \
    --title "synthetic corpus, embedding 32, hidden 64, latent 8: validation every 100 steps" \
    --out docs/serve/curves-synthetic.png
