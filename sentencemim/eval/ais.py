"""Annealed importance sampling (Neal 2001) from the prior to the posterior with HMC
transitions in z, as Wu, Burda, Salakhutdinov & Grosse (2017) evaluate decoder-based
models, and the BDMC sandwich (Grosse, Ghahramani & Adams 2015).

Intermediate distributions f_t(z) = P(z) p(x|z)^beta_t, 0 = beta_0 < ... < beta_T = 1
(a sigmoid schedule). Each chain starts at z_0 ~ P and accumulates

    log w = sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}),   z_t ~ HMC leaving f_t invariant,

so E[w] = p(x): -log mean_c w_c over C chains bounds -log p(x) from above in expectation.
Run from an exact posterior sample with the schedule reversed (beta 1 -> 0), E[w] =
1 / p(x) and log mean_c w_c bounds -log p(x) from *below* in expectation: on sentences
sampled from the model, where the z that generated x is an exact posterior sample, the
two give the sandwich (`bdmc`).

Batched: sentences x chains are the rows of one decoder pass (Scorer.nll_grad gives
log p(x|z) and its gradient for all of them). Device-agnostic.

HMC step size, per sentence: adapted towards an acceptance rate of 0.65 from separate
*pilot* chains only (they run beside the estimate chains but never enter the estimate),
so the estimate chains follow a schedule that does not depend on their own states and
the estimate stays unbiased. Reverse AIS starts every chain at the same exact sample, so
its pilots would carry that sample into the schedule: it reuses the forward run's
per-sentence step sizes, reversed, instead.

With the aggregate-posterior prior (narrow components) HMC cannot move between
components: AIS is then valid but behaves like importance sampling from the prior.
`proposals.Components` is the tool for that prior (see docs/evaluation.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import Dataset
from ..progress import Progress
from .scoring import Scorer

TARGET_ACCEPT = 0.65


def schedule(steps: int, rad: float = 4.0) -> np.ndarray:
    """Sigmoid annealing schedule beta_0 = 0 < ... < beta_T = 1 (Grosse et al. 2015)."""
    if steps == 1:
        return np.array([0.0, 1.0])
    s = 1.0 / (1.0 + np.exp(-np.linspace(-rad, rad, steps + 1)))
    return (s - s[0]) / (s[-1] - s[0])


class _Target:
    """log p(x|z) and its gradient for the rows (S, B) of one batch, plus the prior."""

    def __init__(self, scorer: Scorer, batch, prior):
        self.scorer, self.batch, self.prior = scorer, batch, prior

    def loglik(self, z):
        rec, g = self.scorer.nll_grad(self.batch.dec_in, self.batch.dec_tgt, z)
        ll = -rec.double()
        bad = ~torch.isfinite(ll)
        return ll.masked_fill(bad, -math.inf), torch.nan_to_num(-g, nan=0.0, posinf=0.0, neginf=0.0)


def _hmc(target: _Target, z, ll, g, beta, eps, leapfrog, gen):
    """One HMC transition leaving P(z) p(x|z)^beta invariant. eps: (B,) step sizes.
    Returns the new (z, ll, g) and the acceptance probability of each row (S, B)."""
    prior = target.prior
    e = eps[None, :, None].to(z.dtype)

    def grad_u(zz, gg):  # d/dz of -(log P + beta log p(x|z))
        return -(prior.grad(zz) + beta * gg)

    p0 = torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)
    p = p0 - 0.5 * e * grad_u(z, g)
    zn = z
    for i in range(leapfrog):
        zn = zn + e * p
        lln, gn = target.loglik(zn)
        p = p - (e if i < leapfrog - 1 else 0.5 * e) * grad_u(zn, gn)
    h0 = -(prior.log_prob(z) + beta * ll) + 0.5 * (p0.double() ** 2).sum(-1)
    h1 = -(prior.log_prob(zn) + beta * lln) + 0.5 * (p.double() ** 2).sum(-1)
    log_alpha = torch.nan_to_num(h0 - h1, nan=-math.inf).clamp(max=0.0)
    u = torch.rand(log_alpha.shape, generator=gen, device=z.device, dtype=torch.float64)
    acc = torch.log(u) < log_alpha  # (S, B)
    z = torch.where(acc[..., None], zn, z)
    ll = torch.where(acc, lln, ll)
    g = torch.where(acc[..., None], gn, g)
    return z, ll, g, torch.exp(log_alpha)


def ais_batch(scorer: Scorer, batch, prior, betas: np.ndarray, chains: int, pilot: int, leapfrog: int,
              gen: torch.Generator, start: torch.Tensor | None = None, eps0: float | None = None,
              eps_steps: torch.Tensor | None = None) -> dict:
    """AIS along `betas` for the B sentences of a batch. Forward (betas 0 -> 1): chains
    start from the prior. Reverse (betas 1 -> 0): they start at `start` (B, d), an exact
    posterior sample. `eps_steps` (T - 1, B): a fixed step size per transition instead of
    the pilot-adapted one. Returns log_w (B, chains) float64 of the estimate chains, the
    mean acceptance probability and the step sizes used, eps_steps (T - 1, B)."""
    target = _Target(scorer, batch, prior)
    B = batch.size
    S = chains + pilot
    dtype = scorer.param_dtype
    device = batch.dec_in.device
    if start is None:
        z = prior.sample((S, B), gen, device, dtype)
    else:
        z = start.to(device=device, dtype=dtype)[None].expand(S, B, -1).clone()
    ll, g = target.loglik(z)
    eps = torch.full((B,), 0.5 * prior.scale() if eps0 is None else eps0, dtype=torch.float64, device=device)
    log_w = torch.zeros(S, B, dtype=torch.float64, device=device)
    accs, used = [], []
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * ll  # f_t / f_{t-1} at the current state
        if t == len(betas) - 1:
            break
        if eps_steps is not None:
            eps = eps_steps[t - 1].to(device=device, dtype=torch.float64)
        used.append(eps)
        z, ll, g, acc = _hmc(target, z, ll, g, float(betas[t]), eps, leapfrog, gen)
        rate = acc[chains:].mean(0) if pilot else torch.full((B,), TARGET_ACCEPT, device=device, dtype=torch.float64)
        eps = eps * torch.exp(rate - TARGET_ACCEPT)  # from the pilot chains only
        accs.append(float(acc[:chains].mean()))
    return {"log_w": log_w[:chains].T.cpu().numpy(), "accept": float(np.mean(accs)) if accs else float("nan"),
            "eps_steps": torch.stack(used).cpu().numpy() if used else np.zeros((0, B))}


def ais(model, ds: Dataset, prior, steps: int, chains: int = 16, pilot: int = 4, leapfrog: int = 5,
        batch_size: int = 20, max_rows: int = 1024, seed: int = 0, device="cpu", progress: bool = False,
        starts: torch.Tensor | None = None, eps_steps: np.ndarray | None = None) -> dict:
    """Forward AIS (or reverse from `starts` (N, d), exact posterior samples, dataset order)
    over the sentences of ds. Returns log_w (N, chains) in dataset order, the mean
    acceptance rate and the step sizes used, eps_steps (N, T - 1). Reverse runs take the
    forward run's eps_steps (they are reversed here)."""
    model.eval()
    scorer = Scorer(model, "fp32")
    betas = schedule(steps)
    if starts is not None:
        betas = betas[::-1].copy()
    N = len(ds)
    out = {"log_w": np.zeros((N, chains)), "eps_steps": np.zeros((N, steps - 1))}
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = max(1, min(batch_size, max_rows // (chains + pilot)))
    batches = ds.eval_batches(bs)
    bar = Progress(len(batches), f"AIS {'reverse ' if starts is not None else ''}T={steps} x {chains} chains",
                   enabled=progress)
    accs = []
    for idx in batches:
        b = ds.batch(idx).to(device)
        fixed = None if eps_steps is None else torch.as_tensor(eps_steps[np.asarray(idx)][:, ::-1].T.copy())
        res = ais_batch(scorer, b, prior, betas, chains, pilot if fixed is None else 0, leapfrog, gen,
                        None if starts is None else starts[torch.as_tensor(idx)], eps_steps=fixed)
        out["log_w"][np.asarray(idx)] = res["log_w"]
        out["eps_steps"][np.asarray(idx)] = res["eps_steps"].T
        accs.append(res["accept"])
        bar.update()
    bar.close()
    out["accept"] = float(np.nanmean(accs))
    return out


@torch.no_grad()
def simulate(model, prior, n: int, seed: int = 0, max_len: int = 50, device="cpu") -> tuple[Dataset, torch.Tensor]:
    """n sentences x ~ p(x|z), z ~ P, each with the z that generated it (an exact sample
    of p(z|x)). Sentences that reach max_len without <eos> are drawn again (a cut
    sentence would not be what z generated); empty sentences too (the corpora have none)."""
    from ..decoding import decode
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    seqs, zs = [], []
    dtype = next(model.parameters()).dtype
    for _ in range(100):
        z = prior.sample((max(n, 16),), gen, device, dtype)
        ids = decode(model, z, max_len=max_len + 1, method="sample", generator=gen)
        for row, zi in zip(ids, z):
            if 0 < len(row) <= max_len and len(seqs) < n:
                seqs.append(np.asarray(row, dtype=np.int64))
                zs.append(zi)
        if len(seqs) >= n:
            break
    return Dataset(seqs), torch.stack(zs)


def bdmc(model, prior, n: int, steps: int, chains: int = 16, pilot: int = 4, leapfrog: int = 5, seed: int = 0,
         device="cpu", progress: bool = False, max_rows: int = 1024) -> dict:
    """BDMC on n sentences simulated from the model: forward AIS gives an upper bound and
    reverse AIS from the generating z a lower bound on -log p(x), both in expectation.
    Returns per-sentence values and their means (nats/sentence)."""
    ds, z = simulate(model, prior, n, seed, device=device)
    kw = dict(chains=chains, pilot=pilot, leapfrog=leapfrog, seed=seed + 1, device=device, progress=progress,
              max_rows=max_rows)
    fwd = ais(model, ds, prior, steps, **kw)
    rev = ais(model, ds, prior, steps, starts=z, eps_steps=fwd["eps_steps"], **kw)
    from .proposals import log_mean_exp
    upper = -log_mean_exp(fwd["log_w"], 1)
    lower = log_mean_exp(rev["log_w"], 1)
    return {"sentences": len(ds), "steps": steps, "chains": chains, "upper": upper, "lower": lower,
            "upper_mean": float(upper.mean()), "lower_mean": float(lower.mean()),
            "gap_mean": float((upper - lower).mean()), "prior": prior.source,
            "what": f"BDMC on {len(ds)} sentences sampled from the model (prior {prior.source}): forward AIS "
                    f"(upper bound on NLL in expectation) and reverse AIS from the generating z (lower bound), "
                    f"T={steps} steps, {chains} chains, {leapfrog} leapfrog steps; nats/sentence, words + <eos>"}
