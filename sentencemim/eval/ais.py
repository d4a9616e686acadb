"""Annealed importance sampling (Neal 2001) from the prior to the posterior with HMC
transitions in z, as Wu, Burda, Salakhutdinov & Grosse (2017) evaluate decoder-based
models, and the BDMC sandwich (Grosse, Ghahramani & Adams 2015).

Intermediate distributions f_t(z) = P(z) p(x|z)^beta_t, 0 = beta_0 < ... < beta_T = 1
(a sigmoid schedule). Each chain starts at z_0 ~ P and accumulates

    log w = sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}),   z_t ~ HMC leaving f_t invariant,

so E[w] = p(x): -log mean_c w_c over C chains bounds -log p(x) from above in expectation.

From a per-sentence Gaussian `base` r(z|x) instead (the Gaussian fitted per sentence, which
is already near the posterior), the path is geometric between r and the joint:
f_t(z) = r(z|x)^(1 - beta_t) (P(z) p(x|z))^beta_t, chains start at z_0 ~ r, and

    log w = sum_t (beta_t - beta_{t-1}) [log P(z_{t-1}) + log p(x|z_{t-1}) - log r(z_{t-1}|x)].

r is normalised, so again E[w] = p(x); with T = 1 this is importance sampling from r, and
it tightens as T grows. HMC then uses r's stds as its (diagonal) mass matrix, i.e. it moves
in r's whitened coordinates, so one step size suits every dimension.

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

HMC's moves may use a *surrogate* gradient (`hmc_gradient`): a leapfrog trajectory built
with any deterministic force F(z) is still reversible and volume-preserving (every kick and
drift is a shear), so a Metropolis test on the exact log f_beta keeps f_beta invariant and
the estimate exact, whatever F is; a poor F only lowers the acceptance rate. With "bf16"
the kicks use the gradient whose vocabulary projections run in bfloat16 (several times
faster on CPUs with AMX or AVX512-BF16, and on GPUs), and one exact float32 pass per
transition, at the trajectory's end, gives the value the test and the weights use. "fp32"
moves with the exact gradient, which the same pass gives with the value.

With the aggregate-posterior prior (narrow components) HMC cannot move between
components: AIS is then valid but behaves like importance sampling from the prior.
`proposals.Components` is the tool for that prior (see docs/evaluation.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import PRECISIONS
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


def _finite(ll: torch.Tensor) -> torch.Tensor:
    return ll.masked_fill(~torch.isfinite(ll), -math.inf)


class _Target:
    """log p(x|z) and its gradient for the rows (S, B) of one batch, the prior, and the
    path's start: the prior (base None) or a per-sentence Gaussian r(z|x) (`base`).
    force: None (HMC moves with the exact gradient) or f(batch, z) -> a surrogate of
    d(-log p(x|z))/dz, the same function of z at every call."""

    def __init__(self, scorer: Scorer, batch, prior, base=None, force=None):
        self.scorer, self.batch, self.prior, self.base, self.force = scorer, batch, prior, base, force

    def at(self, z, value: bool = True):
        """(log p(x|z), g): the exact value (float64; None if not `value` and not free) and the
        gradient of log p(x|z) that HMC moves with."""
        b = self.batch
        if self.force is None:  # one pass gives both
            rec, g = self.scorer.nll_grad(b.dec_in, b.dec_tgt, z)
            ll = _finite(-rec.double())
        else:
            g = self.force(b, z)
            ll = _finite(-self.scorer.nll(b.dec_in, b.dec_tgt, z)[0].double()) if value else None
        return ll, torch.nan_to_num(-g, nan=0.0, posinf=0.0, neginf=0.0)

    def increment(self, z, ll):
        """log f_1(z) - log f_0(z): log p(x|z), plus log P(z) - log r(z|x) from a base."""
        if self.base is None:
            return ll
        return ll + self.prior.log_prob(z) - self.base.log_prob(z)

    def log_f(self, z, ll, beta):
        """log f_beta(z), up to a constant that does not depend on z."""
        if self.base is None:
            return self.prior.log_prob(z) + beta * ll
        return (1 - beta) * self.base.log_prob(z) + beta * (self.prior.log_prob(z) + ll)

    def grad_log_f(self, z, g, beta):
        if self.base is None:
            return self.prior.grad(z) + beta * g
        return (1 - beta) * self.base.grad(z) + beta * (self.prior.grad(z) + g)


def _hmc(target: _Target, z, ll, g, beta, eps, leapfrog, gen, whiten: bool = True):
    """One HMC transition leaving f_beta invariant. eps: (B,) step sizes, in the base's
    whitened coordinates when there is a base (its stds are the inverse mass matrix).
    Returns the new (z, ll, g) and the acceptance probability of each row (S, B)."""
    e = eps[None, :, None].to(z.dtype)
    if target.base is not None and whiten:
        e = e * torch.exp(target.base.logstd).to(z.dtype)[None]  # (1, B, d)

    def grad_u(zz, gg):  # d/dz of -log f_beta
        return -target.grad_log_f(zz, gg, beta)

    p0 = torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)
    p = p0 - 0.5 * e * grad_u(z, g)
    zn = z
    for i in range(leapfrog):
        last = i == leapfrog - 1
        zn = zn + e * p
        lln, gn = target.at(zn, value=last)  # the exact value only where the test needs it
        p = p - (0.5 * e if last else e) * grad_u(zn, gn)
    h0 = -target.log_f(z, ll, beta) + 0.5 * (p0.double() ** 2).sum(-1)
    h1 = -target.log_f(zn, lln, beta) + 0.5 * (p.double() ** 2).sum(-1)
    log_alpha = torch.nan_to_num(h0 - h1, nan=-math.inf).clamp(max=0.0)
    u = torch.rand(log_alpha.shape, generator=gen, device=z.device, dtype=torch.float64)
    acc = torch.log(u) < log_alpha  # (S, B)
    z = torch.where(acc[..., None], zn, z)
    ll = torch.where(acc, lln, ll)
    g = torch.where(acc[..., None], gn, g)
    return z, ll, g, torch.exp(log_alpha)


def ais_batch(scorer: Scorer, batch, prior, betas: np.ndarray, chains: int, pilot: int, leapfrog: int,
              gen: torch.Generator, start: torch.Tensor | None = None, eps0: float | None = None,
              eps_steps: torch.Tensor | None = None, base=None, whiten: bool = True, force=None) -> dict:
    """AIS along `betas` for the B sentences of a batch. Forward (betas 0 -> 1): chains
    start from the prior, or from `base` (a `proposals.Gaussian` of the batch, (B, d)).
    Reverse (betas 1 -> 0): they start at `start` (B, d), an exact posterior sample, and
    end at the prior (or the base). `eps_steps` (T - 1, B): a fixed step size per
    transition instead of the pilot-adapted one. Returns log_w (B, chains) float64 of the
    estimate chains, the mean acceptance probability and the step sizes used, eps_steps (T - 1, B).
    whiten False: HMC with the identity mass matrix from a base too (for comparisons).
    force: as in `_Target` (None: the exact gradient)."""
    target = _Target(scorer, batch, prior, base, force)
    B = batch.size
    S = chains + pilot
    dtype = scorer.param_dtype
    device = batch.dec_in.device
    if start is not None:
        z = start.to(device=device, dtype=dtype)[None].expand(S, B, -1).clone()
    elif base is not None:
        z = base.sample(S, gen).to(dtype)
    else:
        z = prior.sample((S, B), gen, device, dtype)
    ll, g = target.at(z)
    if eps0 is None:  # in the base's whitened coordinates, where it is N(0, I)
        eps0 = 0.5 * (prior.scale() if base is None else 1.0)
    eps = torch.full((B,), eps0, dtype=torch.float64, device=device)
    log_w = torch.zeros(S, B, dtype=torch.float64, device=device)
    accs, used = [], []
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * target.increment(z, ll)  # f_t / f_{t-1} at the current state
        if t == len(betas) - 1:
            break
        if eps_steps is not None:
            eps = eps_steps[t - 1].to(device=device, dtype=torch.float64)
        used.append(eps)
        z, ll, g, acc = _hmc(target, z, ll, g, float(betas[t]), eps, leapfrog, gen, whiten)
        rate = acc[chains:].mean(0) if pilot else torch.full((B,), TARGET_ACCEPT, device=device, dtype=torch.float64)
        eps = eps * torch.exp(rate - TARGET_ACCEPT)  # from the pilot chains only
        accs.append(float(acc[:chains].mean()))
    return {"log_w": log_w[:chains].T.cpu().numpy(), "accept": float(np.mean(accs)) if accs else float("nan"),
            "eps_steps": torch.stack(used).cpu().numpy() if used else np.zeros((0, B))}


def hmc_force(model, hmc_gradient):
    """The `force` of `_Target` for an `hmc_gradient`: "fp32" (None: the exact gradient),
    "bf16" (the gradient of a bfloat16 Scorer; a UserError where the device has no native
    bf16), or a function f(batch, z) -> d(-log p(x|z))/dz itself (for tests)."""
    if callable(hmc_gradient):
        return hmc_gradient
    if hmc_gradient == "fp32":
        return None
    if hmc_gradient != "bf16":
        raise ValueError(f"hmc_gradient must be one of {PRECISIONS} or a function, not {hmc_gradient!r}")
    sc = Scorer(model, "bf16")
    return lambda b, z: sc.nll_grad(b.dec_in, b.dec_tgt, z)[1]


def ais(model, ds: Dataset, prior, steps: int, chains: int = 16, pilot: int = 4, leapfrog: int = 5,
        batch_size: int = 20, max_rows: int = 1024, seed: int = 0, device="cpu", progress: bool = False,
        starts: torch.Tensor | None = None, eps_steps: np.ndarray | None = None, base=None,
        whiten: bool = True, hmc_gradient="fp32") -> dict:
    """Forward AIS (or reverse from `starts` (N, d), exact posterior samples, dataset order)
    over the sentences of ds. Returns log_w (N, chains) in dataset order, the mean
    acceptance rate and the step sizes used, eps_steps (N, T - 1). Reverse runs take the
    forward run's eps_steps (they are reversed here). `base(batch, scorer)` -> a
    `proposals.Gaussian` of the batch: the path starts there instead of at the prior; it
    must give the same Gaussian for the same sentences each time (a reverse run ends where
    its forward run started). whiten: as in `ais_batch`. hmc_gradient: what HMC's leapfrog
    moves with (`hmc_force`); the weights and the Metropolis test are exact float32 either way."""
    model.eval()
    scorer = Scorer(model, "fp32")
    force = hmc_force(model, hmc_gradient)
    betas = schedule(steps)
    if starts is not None:
        betas = betas[::-1].copy()
    N = len(ds)
    out = {"log_w": np.zeros((N, chains)), "eps_steps": np.zeros((N, steps - 1))}
    gen = torch.Generator(device=device).manual_seed(seed)
    bs = max(1, min(batch_size, max_rows // (chains + pilot)))
    batches = ds.eval_batches(bs)
    bar = Progress(len(batches), f"AIS {'reverse ' if starts is not None else ''}"
                                 f"{'' if base is None else 'from a fitted Gaussian '}T={steps} x {chains} chains",
                   enabled=progress)
    accs = []
    for idx in batches:
        b = ds.batch(idx).to(device)
        fixed = None if eps_steps is None else torch.as_tensor(eps_steps[np.asarray(idx)][:, ::-1].T.copy())
        res = ais_batch(scorer, b, prior, betas, chains, pilot if fixed is None else 0, leapfrog, gen,
                        None if starts is None else starts[torch.as_tensor(idx)], eps_steps=fixed,
                        base=None if base is None else base(b, scorer), whiten=whiten, force=force)
        out["log_w"][np.asarray(idx)] = res["log_w"]
        out["eps_steps"][np.asarray(idx)] = res["eps_steps"].T
        accs.append(res["accept"])
        bar.update()
    bar.close()
    out["accept"] = float(np.nanmean(accs)) if np.isfinite(accs).any() else float("nan")  # T = 1: no transition
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
         device="cpu", progress: bool = False, max_rows: int = 1024, base=None, base_what: str = "",
         hmc_gradient="fp32") -> dict:
    """BDMC on n sentences simulated from the model: forward AIS gives an upper bound and
    reverse AIS from the generating z a lower bound on -log p(x), both in expectation.
    `base` and `hmc_gradient` as in `ais` (the same for both directions). Returns
    per-sentence values and their means (nats/sentence)."""
    ds, z = simulate(model, prior, n, seed, device=device)
    kw = dict(chains=chains, pilot=pilot, leapfrog=leapfrog, seed=seed + 1, device=device, progress=progress,
              max_rows=max_rows, base=base, hmc_gradient=hmc_gradient)
    fwd = ais(model, ds, prior, steps, **kw)
    rev = ais(model, ds, prior, steps, starts=z, eps_steps=fwd["eps_steps"], **kw)
    from .proposals import log_mean_exp
    upper = -log_mean_exp(fwd["log_w"], 1)
    lower = log_mean_exp(rev["log_w"], 1)
    return {"sentences": len(ds), "steps": steps, "chains": chains, "upper": upper, "lower": lower,
            "upper_mean": float(upper.mean()), "lower_mean": float(lower.mean()),
            "gap_mean": float((upper - lower).mean()), "prior": prior.source,
            "what": f"BDMC on {len(ds)} sentences sampled from the model (prior {prior.source}): forward AIS "
                    f"{base_what or 'from the prior'} "
                    f"(upper bound on NLL in expectation) and reverse AIS from the generating z (lower bound), "
                    f"T={steps} steps, {chains} chains, {leapfrog} leapfrog steps; nats/sentence, words + <eos>"}
