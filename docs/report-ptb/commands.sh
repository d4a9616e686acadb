#!/usr/bin/env bash
# How docs/report-ptb was made, on the 2-core shared CPU machine (OMP_NUM_THREADS=1).
# The two models were trained with the foundation's CLI (defaults = the paper's PTB
# settings: embedding 300, hidden 512, Adam 1e-3, batch 20, clip 0.25); both runs were
# still young when the report was made (steps in the report), so the numbers describe
# these checkpoints, not converged models.
set -euo pipefail
export OMP_NUM_THREADS=1
DATA=/work/shared/data   # holds ptb/{train,valid,test}.txt
smim train --corpus ptb --data-dir $DATA --objective mim --latent-dim 512 --eval-every 500 \
    --eval-max-sentences 1000 --max-epochs 30 --out runs/ptb-mim512
smim train --corpus ptb --data-dir $DATA --objective ae --latent-dim 512 --max-steps 4000 \
    --eval-max-sentences 1000 --out runs/ptb-ae512-latent
# The report read copies of the best checkpoints, taken at 01:25 UTC while the sMIM run
# went on (sMIM: step 3000 of its first 1.5 epochs; AE: step 4000, finished):
mkdir -p runs/ptb-mim512-snap runs/ptb-ae512-snap
cp runs/ptb-mim512/{checkpoint-best.pt,vocab.json,config.json} runs/ptb-mim512-snap/
cp runs/ptb-ae512-latent/{checkpoint-best.pt,vocab.json,config.json} runs/ptb-ae512-snap/
smim report runs/ptb-mim512-snap runs/ptb-ae512-snap --data-dir $DATA --out docs/report-ptb \
    --max-sentences 500 --fig3-n 100 \
    --reference-nll "paper Table 2 sVAE(16) ELBO NLL (full test, other tokenisation)=113.46"
