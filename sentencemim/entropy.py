"""Differential entropy of latent codes (paper Table 6).

The k-nearest-neighbour estimator of Kozachenko & Leonenko (1987) in the form of
Kraskov, Stoegbauer & Grassberger (2004, eqn 20) with the maximum norm:

    H_hat = psi(N) - psi(k) + (d / N) sum_i log(2 r_i)        nats

where r_i is the max-norm distance from point i to its k-th nearest neighbour (so
(2 r_i)^d is the volume of the max-norm ball that reaches it), psi the digamma
function. The paper uses k = 3 and compares with a standard normal in d dims,
d/2 (1 + log 2 pi) nats (22.7 for d = 16, 181.6 for d = 128).

Bias: the estimator is consistent, but at a fixed N its error grows with d
(the k-th neighbour is far away, and the density is not flat over its ball).
Measured for N = 4000 standard-normal samples (see docs/evaluation.md and
tests/test_entropy.py): within ~0.1 nats up to d = 8; at d = 16, 64, 128 it reads
noticeably high, so d >= 16 values are for comparison between models of the
same d and N only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from .errors import UserError


class TooFewPoints(UserError, ValueError):
    """Too few distinct points for the estimator: a user-fixable input (a tiny evaluation set)."""


def std_normal_entropy(d: int) -> float:
    """Entropy of N(0, I_d) in nats: d/2 (1 + log 2 pi)."""
    return 0.5 * d * (1.0 + math.log(2 * math.pi))


def gaussian_entropy(cov: np.ndarray) -> float:
    """Entropy of N(mu, cov) in nats: 1/2 log det(2 pi e cov)."""
    cov = np.atleast_2d(cov)
    sign, logdet = np.linalg.slogdet(2 * math.pi * math.e * cov)
    if sign <= 0:
        raise ValueError("covariance is not positive definite")
    return 0.5 * logdet


def knn_entropy(x: np.ndarray, k: int = 3) -> dict:
    """Kozachenko-Leonenko entropy estimate (max norm, natural log) of samples x (N, d).

    Exact duplicate rows (e.g. posterior means of repeated sentences) have zero
    neighbour distance and would send the estimate to -inf; they are removed first and
    counted in the result. Returns {"entropy", "n", "d", "k", "duplicates_removed"}.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n0 = x.shape[0]
    x = np.unique(x, axis=0)
    N, d = x.shape
    if N <= k:
        raise TooFewPoints(f"the kNN latent entropy (k = {k}) needs more than {k} distinct codes, got {N}: "
                           "evaluate more (or more varied) sentences")
    # k + 1 because each point is its own nearest neighbour at distance 0
    r = cKDTree(x).query(x, k=k + 1, p=np.inf)[0][:, k]  # (N,)
    h = digamma(N) - digamma(k) + d * np.mean(np.log(2.0 * r))
    return {"entropy": float(h), "n": int(N), "d": int(d), "k": int(k), "duplicates_removed": int(n0 - N)}
