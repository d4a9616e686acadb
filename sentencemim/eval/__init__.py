"""Evaluation: everything that turns a trained model and a test split into labelled numbers.

    evaluate.py   the report of `smim evaluate` / `smim report` / `smim reproduce`: MELBO, ELBO,
                  IWAE, the tightest held-out bounds, latent diagnostics, BLEU; the GRU LM's exact NLL
    terms.py      per-sentence reconstruction and KL terms, perplexities in both <eos> conventions,
                  the MELBO (eqn 16) and its test-set-size curve (Fig. 5), labelled bound entries
    bleu.py       BLEU of reconstructions in the paper's mode and ours
    scoring.py    the batched decoder scorer: -log p(x|z) for many z per sentence, and its gradient
    bounds.py     q-only IWAE, the training aggregate prior, MI, active units, Fig. 3 cross terms
    heldout.py    the tightest held-out bound (issue #12), settings chosen on validation sentences,
                  from proposals.py (importance-sampling proposals), ais.py (AIS with HMC, BDMC)
                  and priors.py (N(0, I) and the training mixture as densities)
"""
