"""Ground truth for the bounds: a tiny model whose log p(x) is computed exactly.

The model: 3 words (+ <eos>), a 1-d latent, float64. Its decoder can emit any
length, so "all sentences" is infinite. What is checkable honestly is the identity

    sum_{|x| <= 3} p(x|z)  +  sum_{w in W^4} p(first four tokens = w | z)  =  1   for every z,

(every sentence either ends within 3 words or starts with 4 words), and the same
after integrating over z. log p(x) = log int N(z; 0, 1) p(x|z) dz is computed by
Gauss-Hermite quadrature and checked against a dense trapezoid rule.
"""

import math
from itertools import product

import numpy as np
import pytest
import torch

from sentencemim.eval.bounds import AggregatePrior, importance_weights, iwae_nll, log_mean_exp, posteriors
from sentencemim.config import ModelConfig
from sentencemim.data import Dataset, collate
from sentencemim.model import SentenceAE

WORDS = (4, 5, 6)  # ids; 0 <pad>, 1 <unk>, 2 <sos>, 3 <eos>


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=7, embedding_dim=4, hidden_dim=4, latent_dim=1, embedding_dropout=0.0)
    m = SentenceAE(cfg).double().eval()
    with torch.no_grad():
        # the decoder may only emit the 3 words and <eos>: the other outputs get probability 0
        m.out.bias[[0, 1, 2]] = -math.inf
        m.out.bias[3] += 0.7  # <eos> likely enough that short sentences hold most of the mass
        # posterior means pushed away from the true posterior, so the bounds have visible
        # gaps; a posterior wider than the prior keeps the importance weights bounded
        m.to_mu.weight *= 3.0
        m.to_logvar.weight.zero_()
        m.to_logvar.bias.fill_(0.2)
        m.z_to_hidden.weight *= 2.0  # p(x|z) varies strongly with z
    return m


def sentences(max_len=3):
    return [np.asarray(s, dtype=np.int64) for n in range(max_len + 1) for s in product(WORDS, repeat=n)]


@torch.no_grad()
def log_p_given_z(model, seqs, z, drop_eos=False):
    """(S, G) matrix of log p(x_s|z_g); with drop_eos, of the tokens without the final <eos>."""
    b = collate(seqs, np.arange(len(seqs)))
    S, G = len(seqs), len(z)
    zz = torch.as_tensor(z, dtype=torch.float64).reshape(G, 1).repeat_interleave(S, 0)  # row g*S + s
    rec, eos = model.token_nll(b.dec_in.repeat(G, 1), b.dec_tgt.repeat(G, 1), b.lengths.repeat(G), zz)
    lp = -(rec - eos) if drop_eos else -rec
    return lp.reshape(G, S).T.numpy()


def gauss_hermite(n=120):
    """Nodes and log weights for int f(z) N(z; 0, 1) dz."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, np.log(w) - 0.5 * math.log(2 * math.pi)


def exact_log_px(model, seqs, n=120):
    x, lw = gauss_hermite(n)
    return log_mean_exp(log_p_given_z(model, seqs, x) + lw, axis=1) + math.log(n)


def test_probabilities_sum_to_one(model):
    short, long4 = sentences(3), [np.asarray(s) for s in product(WORDS, repeat=4)]
    z = np.linspace(-6, 6, 25)
    p_short = np.exp(log_p_given_z(model, short, z)).sum(0)  # (G,)
    p_tail = np.exp(log_p_given_z(model, long4, z, drop_eos=True)).sum(0)
    np.testing.assert_allclose(p_short + p_tail, 1.0, atol=1e-12)  # for every z
    # integrated over z: p(x) of all sentences up to 3 words plus the mass of longer ones
    x, lw = gauss_hermite()
    P_short = np.exp(exact_log_px(model, short)).sum()
    P_tail = (np.exp(log_p_given_z(model, long4, x, drop_eos=True) + lw)).sum()
    assert P_short + P_tail == pytest.approx(1.0, abs=1e-10)
    assert P_tail > 0.05 and P_short > 0.5  # both parts carry real mass


def test_quadrature_converged(model):
    seqs = sentences(3)
    gh = exact_log_px(model, seqs)
    grid = np.linspace(-12, 12, 8001)
    lw = np.log(np.full(len(grid), grid[1] - grid[0])) - 0.5 * grid ** 2 - 0.5 * math.log(2 * math.pi)
    trap = log_mean_exp(log_p_given_z(model, seqs, grid) + lw, axis=1) + math.log(len(grid))
    np.testing.assert_allclose(gh, trap, atol=1e-8)


def _iwae_samples(model, seqs, k, prior=None, seed=0):
    ds = Dataset(seqs)
    w = importance_weights(model, ds, k, prior, batch_size=8, max_rows=4000, seed=seed)
    return ds, w


def test_elbo_le_iwae_le_log_px_and_tightening(model):
    """For every sentence: ELBO <= E[IWAE_10] <= E[IWAE_100] <= log p(x), exact ELBO by
    quadrature, E[IWAE_k] as the mean over 3000/k independent groups of k samples."""
    seqs = sentences(3)
    log_px = exact_log_px(model, seqs)
    ds, w = _iwae_samples(model, seqs, 3000)
    mu, logvar = posteriors(model, ds)
    # exact ELBO: E_q[log p(x|z)] by Gauss-Hermite under q, minus the analytic KL
    x, lw = gauss_hermite(60)
    sd = torch.exp(0.5 * logvar)[:, 0].numpy()
    elbo = np.empty(len(seqs))
    for i, s in enumerate(seqs):
        zi = mu[i, 0].item() + sd[i] * x
        elbo[i] = (np.exp(lw) * log_p_given_z(model, [s], zi)[0]).sum()
    elbo -= w["kl"]
    logw = -w["rec"] + w["log_p"] - w["log_q"]  # (N, 3000)
    means, ses = {}, {}
    for k in (1, 10, 100):
        groups = log_mean_exp(logw.reshape(len(seqs), -1, k), axis=2)  # (N, 3000 / k)
        means[k], ses[k] = groups.mean(1), groups.std(1) / math.sqrt(groups.shape[1])
    # the Monte Carlo ELBO (IWAE_1) agrees with the exact one: log q, log p and rec are right
    assert np.all(np.abs(means[1] - elbo) < 4 * ses[1] + 1e-9)
    assert np.all(elbo < log_px - 1e-3)  # a real gap for every sentence
    tol = 4 * np.maximum(ses[10], ses[100])
    assert np.all(means[10] > elbo)
    assert np.all(means[100] > means[10] - tol)
    assert np.all(means[100] <= log_px + 4 * ses[100])
    # tightening on average, and the gaps to the truth shrink substantially
    assert (log_px - means[100]).mean() < 0.5 * (log_px - means[10]).mean() < 0.5 * (log_px - elbo).mean()
    # IWAE_100 is nearly exact here, while the ELBO is not
    assert np.abs(log_px - means[100]).max() < 0.05 and (log_px - means[100]).mean() < 0.02
    assert (log_px - elbo).mean() > 0.1
    # iwae_nll is the log-mean-exp over all samples of one sentence
    np.testing.assert_allclose(iwae_nll(w["rec"], w["log_q"], w["log_p"], k=10),
                               -log_mean_exp(logw[:, :10], axis=1), rtol=1e-12)


def test_iwae_under_mixture_prior_matches_exact(model):
    """The aggregate-posterior prior enters the bound correctly: IWAE with many samples
    converges to log int P_mix(z) p(x|z) dz, computed on a dense grid."""
    seqs = sentences(2)
    ds = Dataset(seqs)
    mu, logvar = posteriors(model, ds)
    prior = AggregatePrior(mu[:5], logvar[:5], "five sentences")
    grid = np.linspace(-15, 15, 30001)
    log_mix = prior.log_prob(torch.as_tensor(grid).reshape(-1, 1)).numpy()
    assert np.exp(log_mix).sum() * (grid[1] - grid[0]) == pytest.approx(1.0, abs=1e-6)  # a density
    exact = log_mean_exp(log_p_given_z(model, seqs, grid) + log_mix + math.log(grid[1] - grid[0]), 1) \
        + math.log(len(grid))
    _, w = _iwae_samples(model, seqs, 4000, prior, seed=1)
    np.testing.assert_allclose(-iwae_nll(w["rec"], w["log_q"], w["log_agg"]), exact, atol=0.03)


def test_melbo_eqn15_against_exact(model):
    """Eqn 15 with the set's own aggregated posterior as prior, checked exactly:
    log p_D(x_i) >= log E_q[p(x_i|z)] - log N >= E_q[log p(x_i|z)] - log N (MELBO)."""
    seqs = sentences(2)
    N = len(seqs)
    mu, logvar = posteriors(model, Dataset(seqs))
    grid = np.linspace(-15, 15, 30001)
    dz = math.log(grid[1] - grid[0])
    lpz = log_p_given_z(model, seqs, grid)  # (N, G)
    log_q = (-0.5 * (math.log(2 * math.pi) + logvar + (torch.as_tensor(grid)[None] - mu) ** 2
                     / torch.exp(logvar))).numpy()  # (N, G): log q(z_g|x_i)
    log_pD = log_mean_exp(log_q, axis=0) + 0.0  # (G,) log (1/N) sum_j q(z|x_j)
    log_px_D = log_mean_exp(lpz + log_pD + dz, axis=1) + math.log(len(grid))
    log_Eq = log_mean_exp(lpz + log_q + dz, axis=1) + math.log(len(grid))
    Eq_log = (np.exp(log_q + dz) * lpz).sum(1)
    assert np.all(log_px_D >= log_Eq - math.log(N) - 1e-9)
    assert np.all(log_Eq >= Eq_log - 1e-9)
    assert np.all(log_px_D - (Eq_log - math.log(N)) > 1e-4)  # the bound is not tight here
