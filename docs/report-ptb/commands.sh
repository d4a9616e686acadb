#!/usr/bin/env bash
# How docs/report-ptb was made (session 2, 2026-11-24), on the project's 2-core CPU, no GPU.
# The two models were trained with the foundation's CLI (defaults = the paper's PTB
# settings: embedding 300, hidden 512, Adam 1e-3, batch 20, clip 0.25, embedding dropout 0.5).
set -euo pipefail
DATA=/work/shared/data   # holds ptb/{train,valid,test}.txt
# sMIM (512): trained in three processes over two sessions (SIGTERM + --resume in between),
# OMP_NUM_THREADS=1 beside other jobs; 3:19:14 of training for 15,311 steps (7.3 epochs);
# its best checkpoint (validation, beta = 1) is step 14,728.
OMP_NUM_THREADS=1 smim train --corpus ptb --data-dir $DATA --objective mim --latent-dim 512 --eval-every 500 \
    --eval-max-sentences 1000 --max-epochs 30 --out runs/ptb-mim512
OMP_NUM_THREADS=1 smim train --out runs/ptb-mim512 --resume   # twice, each stopped with SIGTERM
# AE (512): 4,000 steps (1.9 epochs), 44 minutes, session 1.
OMP_NUM_THREADS=1 smim train --corpus ptb --data-dir $DATA --objective ae --latent-dim 512 --max-steps 4000 \
    --eval-max-sentences 1000 --out runs/ptb-ae512-latent
mkdir -p runs/ptb-mim512-s14728 runs/ptb-ae512-snap
cp runs/ptb-mim512/{checkpoint-best.pt,vocab.json,config.json} runs/ptb-mim512-s14728/
cp runs/ptb-ae512-latent/{checkpoint-best.pt,vocab.json,config.json} runs/ptb-ae512-snap/
# The report: the WHOLE PTB test set (3,761 sentences), IWAE K = 100, MELBO R = 10, 2 threads.
smim report runs/ptb-mim512-s14728 runs/ptb-ae512-snap --data-dir $DATA --out runs/report-ptb-full \
    --fig3-n 100 \
    --reference-nll "paper Table 2 sVAE(16) ELBO NLL (full test, other tokenisation)=113.46"
rm -f docs/report-ptb/*; cp runs/report-ptb-full/* docs/report-ptb/   # per-run files are named after the run folders
