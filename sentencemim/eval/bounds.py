"""Held-out bounds on -log p(x), and latent diagnostics.

For one sentence x with K samples z_k ~ q(z|x) and a prior P(z), the log weights

    w_k = log p(x|z_k) + log P(z_k) - log q(z_k|x)

give (Burda et al. 2016)

    IWAE_K  = log (1/K) sum_k exp(w_k)   <=  log p(x),   rising towards log p(x) as K grows
    ELBO    = IWAE_1 = w_1                 (single-sample form)
    ELBO    = E_q[log p(x|z)] - KL(q || N(0, I))   (analytic KL; only for the N(0, I) prior)

Two priors are evaluated on the same z samples (the decoder pass is the cost):

    N(0, I)           the model's prior
    training mixture  P(z) = (1/M) sum_m q(z|x_m) over M *training* sentences chosen by
                      seed. It uses no test data, so unlike the MELBO (eqn 16, whose
                      prior is the test set's own aggregated posterior) it is a valid
                      held-out bound.

Also here: the mutual-information estimate I(x; z) of He et al. (2019) and active
units (Burda et al. 2016). Everything keeps per-sentence values in dataset order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data import Dataset
from ..model import LOG_2PI, SentenceAE, log_normal, log_std_normal
from ..progress import Progress
from .scoring import Scorer


def log_q_matrix(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log N(z_s; mu_m, diag exp(logvar_m)) for every pair: (S, d) x (M, d) -> (S, M), float64.

    Expanded as z^2 . (1/var) - 2 z . (mu/var) + mu^2/var so the work is two matrix
    products. Float64 because with posterior variances near e^-10 the three terms are
    ~1e7 and cancel: float32 would leave errors of order 1 nat.
    """
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    inv_var = torch.exp(-logvar)  # (M, d)
    const = -0.5 * (LOG_2PI * mu.shape[1] + logvar.sum(1) + (mu ** 2 * inv_var).sum(1))  # (M,)
    out = []
    for s in range(0, z.shape[0], chunk):
        zc = z[s:s + chunk]  # (c, d)
        quad = (zc ** 2) @ inv_var.T - 2.0 * zc @ (mu * inv_var).T  # (c, M)
        out.append(const - 0.5 * quad)
    return torch.cat(out)


@dataclass
class AggregatePrior:
    """P(z) = (1/M) sum_m N(z; mu_m, diag exp(logvar_m)): a mixture of the posteriors of
    M sentences (from the training set, so it is fixed before any test sentence is seen)."""

    mu: torch.Tensor  # (M, d)
    logvar: torch.Tensor  # (M, d)
    source: str = ""  # which sentences, for labels

    @property
    def m(self) -> int:
        return self.mu.shape[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(S, d) -> (S,) float64."""
        return torch.logsumexp(log_q_matrix(z, self.mu, self.logvar), dim=1) - math.log(self.m)


@torch.no_grad()
def posteriors(model: SentenceAE, ds: Dataset, batch_size: int = 100, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of every sentence of ds, (N, d) each, in dataset order."""
    model.eval()
    d, dtype = model.cfg.latent_dim, next(model.parameters()).dtype
    mu, logvar = torch.zeros(len(ds), d, dtype=dtype), torch.zeros(len(ds), d, dtype=dtype)
    for idx in ds.eval_batches(batch_size):
        b = ds.batch(idx).to(device)
        m, lv = model.encode(b.enc_in, b.lengths)
        mu[torch.as_tensor(idx)], logvar[torch.as_tensor(idx)] = m.cpu(), lv.cpu()
    return mu, logvar


def training_prior(model: SentenceAE, train: Dataset, m: int, seed: int = 0, batch_size: int = 100,
                   device="cpu") -> AggregatePrior:
    """The aggregated posterior of M training sentences drawn without replacement by `seed`
    (all of them when M >= the training set size)."""
    sub = train.subset(m, seed)
    mu, logvar = posteriors(model, sub, batch_size, device)
    return AggregatePrior(mu, logvar, f"training aggregate posterior, M={len(sub)} (seed {seed})")


@torch.no_grad()
def importance_weights(model: SentenceAE, ds: Dataset, k: int, prior: AggregatePrior | None = None,
                       batch_size: int = 20, max_rows: int = 2048, seed: int = 0, device="cpu",
                       progress: bool = False, precision: str = "fp32") -> dict:
    """Per-sentence, per-sample terms for K samples z ~ q(z|x), in dataset order.

    Returns float64 arrays of shape (N, K): rec = -log p(x|z_k), rec_eos (its <eos>
    part), log_q = log q(z_k|x), log_p = log N(z_k; 0, I), and log_agg = log P_train(z_k)
    when a prior is given; plus kl (N,) analytic and tokens (N,).
    The decoder sees at most `max_rows` (sentence, sample) rows at a time; `precision`
    is the `scoring.Scorer` precision of the vocabulary projection.
    """
    model.eval()
    scorer = Scorer(model, precision)
    N = len(ds)
    keys = ["rec", "rec_eos", "log_q", "log_p"] + (["log_agg"] if prior is not None else [])
    res = {key: np.zeros((N, k)) for key in keys}
    res["kl"] = np.zeros(N)
    res["tokens"] = np.zeros(N, dtype=np.int64)
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = ds.eval_batches(batch_size)
    bar = Progress(len(batches), f"IWAE K={k}", enabled=progress)
    for idx in batches:
        b = ds.batch(idx).to(device)
        B = b.size
        mu, logvar = model.encode(b.enc_in, b.lengths)  # (B, d)
        i = np.asarray(idx)
        res["kl"][i] = (0.5 * (torch.exp(logvar) + mu ** 2 - 1.0 - logvar).sum(-1)).double().cpu().numpy()
        res["tokens"][i] = b.lengths.cpu().numpy()
        c = max(1, min(k, max_rows // B))  # samples per decoder pass
        for s in range(0, k, c):
            n = min(c, k - s)
            eps = torch.randn((n, B, mu.shape[1]), generator=gen, device=device, dtype=mu.dtype)
            zs = mu + eps * torch.exp(0.5 * logvar)  # (n, B, d)
            rec, eos = scorer.nll(b.dec_in, b.dec_tgt, zs)
            rec, eos = rec.reshape(-1), eos.reshape(-1)
            z = zs.reshape(n * B, -1)  # row r = sample r // B of sentence r % B
            terms = {"rec": rec, "rec_eos": eos,
                     "log_q": log_normal(z, mu.repeat(n, 1), logvar.repeat(n, 1)), "log_p": log_std_normal(z)}
            if prior is not None:
                terms["log_agg"] = prior.log_prob(z.cpu())  # the mixture lives on the CPU
            for key, v in terms.items():
                res[key][i, s:s + n] = v.double().cpu().numpy().reshape(n, B).T
        bar.update()
    bar.close()
    return res


def log_mean_exp(w: np.ndarray, axis: int = -1) -> np.ndarray:
    """log((1/K) sum_k exp(w_k)), stable."""
    m = np.max(w, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(w - m), axis=axis))


def iwae_nll(rec: np.ndarray, log_q: np.ndarray, log_prior: np.ndarray, k: int | None = None) -> np.ndarray:
    """-IWAE_k per sentence (N,) from (N, K) terms, using the first k samples (all by default).
    An upper bound on -log p(x) in expectation."""
    k = k or rec.shape[1]
    w = -rec[:, :k] + log_prior[:, :k] - log_q[:, :k]
    return -log_mean_exp(w, axis=1)


def single_sample_elbo_nll(rec, log_q, log_prior) -> np.ndarray:
    """-ELBO per sentence from the first sample only: -log p(x|z_1) - log P(z_1) + log q(z_1|x)."""
    return rec[:, 0] - log_prior[:, 0] + log_q[:, 0]


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0) -> float:
    """I(x; z) under q(x, z) = (1/N) sum_i delta(x - x_i) q(z|x), estimated as in He et al. (2019):

        I = E_x E_q(z|x) [log q(z|x) - log q(z)],  q(z) = (1/N) sum_j q(z|x_j)

    with one z_i ~ q(z|x_i) per sentence. He et al. use the analytic entropy for the first
    term; we evaluate log q(z_i|x_i) at the same sample instead: same expectation, but the
    noise of the two terms cancels, so the estimate is exactly at most log N (the analytic
    form fluctuates by ~ sqrt(d / 2N) nats and exceeds log N for narrow posteriors in high d).
    """
    mu, logvar = mu.double(), logvar.double()
    N = mu.shape[0]
    gen = torch.Generator().manual_seed(seed)
    z = mu + torch.randn(mu.shape, generator=gen, dtype=mu.dtype) * torch.exp(0.5 * logvar)
    log_q = log_q_matrix(z, mu, logvar)  # (N, N): log q(z_i|x_j)
    log_qz = torch.logsumexp(log_q, dim=1) - math.log(N)  # (N,)
    return float((log_q.diagonal() - log_qz).mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Dimensions u with Cov_x(E_q(z|x)[z_u]) = Var_x(mu_u) > threshold (Burda et al. 2016).
    Returns the count and the per-dimension variances (population variance over sentences)."""
    var = mu.double().var(0, unbiased=False).numpy()
    return int((var > threshold).sum()), var


@torch.no_grad()
def cross_terms(model: SentenceAE, ds: Dataset, max_rows: int = 2048, seed: int = 0, device="cpu",
                precision: str = "fp32") -> dict:
    """Paper Fig. 3 on the n sentences of ds, one z_j ~ q(z|x_j) each:

        log_px (n, n)  log p(x_i|z_j)   decoder: does sentence i survive another sentence's code?
        log_qz (n, n)  log q(z_i|x_j)   encoder: does code z_i look like sentence j's posterior?

    The diagonal is i = j. Cost: n^2 sentence decodes."""
    model.eval()
    n = len(ds)
    mu, logvar = posteriors(model, ds, device=device)
    gen = torch.Generator().manual_seed(seed)
    z = mu + torch.randn(mu.shape, generator=gen, dtype=mu.dtype) * torch.exp(0.5 * logvar)  # (n, d)
    b = ds.batch(np.arange(n)).to(device)
    log_px = np.zeros((n, n))
    scorer = Scorer(model, precision)
    c = max(1, max_rows // n)  # codes per decoder pass
    for j in range(0, n, c):
        zc = z[j:j + c].to(device)  # (c, d)
        m = zc.shape[0]
        rec, _ = scorer.nll(b.dec_in, b.dec_tgt, zc[:, None].expand(m, n, -1))  # (m, n): code j + s, sentence i
        log_px[:, j:j + m] = -rec.double().cpu().numpy().T
    log_qz = log_q_matrix(z, mu, logvar).numpy()
    return {"log_px": log_px, "log_qz": log_qz}
