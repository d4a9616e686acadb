"""Held-out likelihood estimation (issue #12): importance sampling with several proposals
(`proposals`), annealed importance sampling with HMC and BDMC (`ais`), the two priors
as densities that can be sampled and differentiated (`priors`), and the choice of the
tightest bound with settings picked on validation sentences (`heldout`).

The older pieces stay where they were: `sentencemim.bounds` (q-only IWAE, the training
aggregate prior, latent diagnostics) and `sentencemim.scoring` (the batched decoder scorer).
"""
