"""Importance-sampling proposals r(z|x) and the importance-weighted bound for any of them.

For one sentence x, K samples z_k ~ r(z|x) and a prior P(z), the log weights

    log w_k = log p(x|z_k) + log P(z_k) - log r(z_k|x)

give -log (1/K) sum_k w_k, an upper bound on -log p(x) in expectation for *any* r whose
support covers the posterior (Burda et al. 2016 take r = q). It is tight when r is close
to p(z|x); with A-MIM's q (std at the log-variance floor, far narrower than p(z|x)) the
weights are heavy-tailed and the bound measures the proposal. The proposals here, each
a small object for the B sentences of one batch (`sample(n, gen)` -> (n, B, d),
`log_prob(z)` -> (n, B) float64):

    Gaussian     N(m_b, diag s_b^2): q itself, q with its std widened by a factor or
                 replaced by a fixed std, or a Gaussian fitted per sentence (`fit_gaussian`)
    FromPrior    the prior alone
    Defensive    a r + (1 - a) P (Hesterberg 1995): the prior's share bounds the weights
                 by p(x|z) / (1 - a)
    Components   for the aggregate-posterior prior P = (1/M) sum_m q_m: sum_m pi_m q_m over
                 the L components nearest to q's mean, pi_m proportional to p(x|mu_m) from
                 one pilot decode at each component's mean. With narrow components the
                 weights are then nearly constant: p(x|z) P(z) / r(z) ~ p(x|mu_m) / (M pi_m).

Every setting of a proposal (widening factor, a, ...) is a function of x only, never of
the samples it is scored with, so each is a valid bound; `heldout` picks them on
validation sentences. `summarise` gives the bound with its diagnostics: the effective
sample size (sum w)^2 / sum w^2 of each sentence, the Pareto k-hat of the weights' tail
(above 0.7 the estimate is not to be trusted) and the bound at several K.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import Dataset
from ..progress import Progress
from .scoring import Scorer
from .priors import Mixture

LOG_2PI = math.log(2 * math.pi)


class Gaussian:
    def __init__(self, mean: torch.Tensor, logstd: torch.Tensor):
        self.mean, self.logstd = mean, logstd  # (B, d)

    def sample(self, n, gen):
        eps = torch.randn((n, *self.mean.shape), generator=gen, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + eps * torch.exp(self.logstd)

    def log_prob(self, z):
        ls = self.logstd.double()
        return -0.5 * (LOG_2PI + 2 * ls + ((z.double() - self.mean.double()) * torch.exp(-ls)) ** 2).sum(-1)

    def grad(self, z):
        """d log r / dz, same shape and dtype as z."""
        return ((self.mean - z) * torch.exp(-2 * self.logstd)).to(z.dtype)


class FromPrior:
    def __init__(self, prior, b: int, like: torch.Tensor):
        self.prior, self.b, self.like = prior, b, like

    def sample(self, n, gen):
        return self.prior.sample((n, self.b), gen, self.like.device, self.like.dtype)

    def log_prob(self, z, log_prior=None):
        return self.prior.log_prob(z) if log_prior is None else log_prior


class Defensive:
    """a r + (1 - a) P."""

    def __init__(self, r, prior, a: float, like: torch.Tensor):
        self.r, self.p, self.a, self.like = r, FromPrior(prior, like.shape[0], like), a, like

    def sample(self, n, gen):
        z = self.r.sample(n, gen)
        if self.a >= 1.0:
            return z
        from_p = torch.rand(z.shape[:2], generator=gen, device=z.device) >= self.a  # (n, B)
        return torch.where(from_p[..., None], self.p.sample(n, gen), z)

    def log_prob(self, z, log_prior=None):
        """log_prior: log P(z) when the caller has it already (the mixture's is costly)."""
        lr = self.r.log_prob(z)
        if self.a >= 1.0:
            return lr
        return torch.logaddexp(math.log(self.a) + lr, math.log1p(-self.a) + self.p.log_prob(z, log_prior))


class Components:
    """sum_l pi_bl q_{cand_bl}(z): a reweighted subset of the mixture prior's components."""

    def __init__(self, prior: Mixture, cand: torch.Tensor, log_pi: torch.Tensor, like: torch.Tensor):
        self.prior, self.cand, self.log_pi, self.like = prior, cand, log_pi, like  # (B, L) each

    def sample(self, n, gen):
        B, _ = self.cand.shape
        pick = torch.multinomial(torch.exp(self.log_pi).float(), n, replacement=True, generator=gen)  # (B, n)
        m = torch.gather(self.cand, 1, pick).T.to(self.prior.mu.device)  # (n, B)
        eps = torch.randn((n, B, self.prior.d), generator=gen, device=self.like.device, dtype=torch.float64)
        z = self.prior.mu[m] + self.prior.std[m] * eps.to(self.prior.mu.device)
        return z.to(device=self.like.device, dtype=self.like.dtype)

    def log_prob(self, z):
        from .bounds import log_q_matrix
        out = []
        for b in range(self.cand.shape[0]):  # (n, L) per sentence: its own candidates
            c = self.cand[b].to(self.prior.mu.device)
            lq = log_q_matrix(z[:, b].to(self.prior.mu.device), self.prior.mu[c], self.prior.logvar[c])
            out.append(torch.logsumexp(lq + self.log_pi[b].to(lq.device), 1))
        return torch.stack(out, 1).to(z.device)


def loglik_and_grad(scorer: Scorer, batch, prior, z):
    """log p(x|z) + log P(z) (float64) and its gradient in z, for z (S, B, d)."""
    rec, g = scorer.nll_grad(batch.dec_in, batch.dec_tgt, z)
    return -rec.double() + prior.log_prob(z), -g + prior.grad(z).to(g.dtype)


def fit_gaussian(scorer: Scorer, batch, prior, mean, logstd, steps: int, samples: int, lr: float,
                 gen: torch.Generator):
    """Per-sentence Gaussian N(m, diag s^2) fitted by `steps` Adam steps on the ELBO
    E_r[log p(x|z) + log P(z)] + sum log s (reparameterised, `samples` z per step), from
    (mean, logstd). Returns the fitted (mean, logstd), (B, d) each, detached."""
    m, ls = mean.detach().clone().double(), logstd.detach().clone().double()
    state = [torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(ls), torch.zeros_like(ls)]
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        eps = torch.randn((samples, *m.shape), generator=gen, device=m.device, dtype=m.dtype)
        z = m + eps * torch.exp(ls)
        _, g = loglik_and_grad(scorer, batch, prior, z.to(mean.dtype))
        g = g.double()
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        grads = (g.mean(0), (g * eps).mean(0) * torch.exp(ls) + 1.0)  # ascent directions
        for i, (p, gr) in enumerate(((m, grads[0]), (ls, grads[1]))):
            mm, vv = state[2 * i], state[2 * i + 1]
            mm.mul_(b1).add_(gr, alpha=1 - b1)
            vv.mul_(b2).addcmul_(gr, gr, value=1 - b2)
            p.add_(lr * (mm / (1 - b1 ** t)) / (torch.sqrt(vv / (1 - b2 ** t)) + 1e-8))
    return m.to(mean.dtype), ls.to(mean.dtype)


@torch.no_grad()
def pilot_components(scorer: Scorer, batch, prior: Mixture, mu_x: torch.Tensor, n_cand: int,
                     max_rows: int = 2048):
    """The n_cand components whose means are nearest to each sentence's q mean, and
    log pi over them, pi proportional to p(x|mu_m) (one decode at each component mean)."""
    B = mu_x.shape[0]
    L = min(n_cand, prior.m)
    dist = torch.cdist(mu_x.double().to(prior.mu.device), prior.mu)  # (B, M)
    cand = torch.topk(dist, L, dim=1, largest=False).indices  # (B, L)
    ll = torch.empty(L, B, dtype=torch.float64)
    c = max(1, max_rows // B)
    for s in range(0, L, c):
        zc = prior.mu[cand[:, s:s + c]].transpose(0, 1).to(device=mu_x.device, dtype=mu_x.dtype)  # (c, B, d)
        rec, _ = scorer.nll(batch.dec_in, batch.dec_tgt, zc)
        ll[s:s + c] = -rec.double().cpu()
    log_pi = torch.log_softmax(ll.T, 1)  # (B, L)
    return cand.to(mu_x.device), log_pi.to(mu_x.device)


@torch.no_grad()
def log_weights(model, ds: Dataset, prior, make, k: int, batch_size: int = 20, max_rows: int = 2048,
                seed: int = 0, device="cpu", progress: bool = False, desc: str = "IS",
                precision: str = "fp32") -> np.ndarray:
    """(N, K) float64 log weights log p(x|z) + log P(z) - log r(z|x), z_k ~ r, dataset order.
    `make(batch, mu, logvar, scorer, gen)` builds the batch's proposal (it may decode:
    fitted Gaussians and pilot decodes run there)."""
    model.eval()
    scorer = Scorer(model, precision)
    out = np.zeros((len(ds), k))
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = ds.eval_batches(batch_size)
    bar = Progress(len(batches), desc, enabled=progress)
    for idx in batches:
        b = ds.batch(idx).to(device)
        mu, logvar = model.encode(b.enc_in, b.lengths)
        r = make(b, mu, logvar, scorer, gen)
        c = max(1, min(k, max_rows // b.size))
        for s in range(0, k, c):
            n = min(c, k - s)
            z = r.sample(n, gen)  # (n, B, d)
            rec, _ = scorer.nll(b.dec_in, b.dec_tgt, z)
            lp = prior.log_prob(z)
            lw = -rec.double() + lp - (r.log_prob(z, lp) if isinstance(r, (Defensive, FromPrior)) else r.log_prob(z))
            out[np.asarray(idx), s:s + n] = lw.cpu().numpy().T
        bar.update()
    bar.close()
    return out


def log_mean_exp(w: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(w, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(w - m), axis=axis))


def ess(logw: np.ndarray) -> np.ndarray:
    """(sum w)^2 / sum w^2 per row, between 1 and K."""
    m = np.max(logw, axis=1, keepdims=True)
    w = np.exp(logw - m)
    return w.sum(1) ** 2 / (w ** 2).sum(1)


def pareto_khat(logw: np.ndarray) -> np.ndarray:
    """Pareto k-hat of each row's importance weights (Vehtari, Simpson, Gelman, Yao & Gabry,
    "Pareto smoothed importance sampling"): the shape of a generalised Pareto distribution
    fitted (Zhang & Stephens 2009, with PSIS's weak prior) to the largest min(K/5, 3 sqrt K)
    weights. Above 0.7 the weights' tail is too heavy for the estimate to be trusted.
    NaN for K < 20 (too few weights to fit a tail); +inf where the tail is too extreme for the
    fit (a few weights so far above the rest that the others underflow to ties at the cutoff
    and the fit overflows): the heaviest tail of all, never a pass."""
    N, K = logw.shape
    out = np.full(N, np.nan)
    if K < 20:
        return out
    M = int(min(math.ceil(0.2 * K), math.ceil(3 * math.sqrt(K))))
    for i in range(N):
        lw = np.sort(logw[i])
        if not np.isfinite(lw[-1]):
            continue
        w = np.exp(lw - lw[-1])
        x = w[-M:] - w[-M - 1]  # exceedances over the cutoff, ascending
        if x[-1] <= 0:
            out[i] = -np.inf  # all tail weights equal: no tail at all
            continue
        with np.errstate(all="ignore"):  # extreme tails overflow in the fit: k-hat is then huge or NaN
            k = _gpd_shape(x)
        out[i] = np.inf if math.isnan(k) else k
    return out


def _gpd_shape(x: np.ndarray) -> float:
    """Zhang & Stephens (2009) posterior-mean shape of a generalised Pareto fit to the
    ascending exceedances x, with PSIS's prior (k pulled towards 0.5 by 10 pseudo-points)."""
    n = len(x)
    m = 30 + int(math.sqrt(n))
    b = 1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3 * x[max(int(n / 4 + 0.5) - 1, 0)]) + 1 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(1)
    ll = n * (np.log(-(b / k)) - k - 1)
    wts = 1 / np.exp(ll - ll[:, None]).sum(1)
    b_post = (b * wts).sum() / wts.sum()
    k_post = np.log1p(-b_post * x).mean()
    return float((n * k_post + 10 * 0.5) / (n + 10))


def k_grid(k: int) -> list[int]:
    """1, 10, 100, ... below k, and k."""
    return sorted({10 ** i for i in range(int(math.log10(k)) + 1) if 10 ** i < k} | {k})


def summarise(logw: np.ndarray) -> dict:
    """Per-sentence bound -log mean_k w_k (N,), ESS (N,) and the mean bound at several K
    (first k samples of each sentence), so a reader sees whether it has converged."""
    nll = -log_mean_exp(logw, 1)
    e = ess(logw)
    return {"nll": nll, "ess": e, "khat": pareto_khat(logw), "convergence": {int(k): float(-log_mean_exp(logw[:, :k], 1).mean())
                                                  for k in k_grid(logw.shape[1])}}
