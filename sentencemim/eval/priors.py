"""The two priors P(z) of the held-out bounds as objects that give log P(z), its
gradient and samples, for z of any leading shape (..., d), on any device:

    StdNormal   N(0, I), the model's prior
    Mixture     (1/M) sum_m N(z; mu_m, diag var_m): the aggregated posterior of M
                training sentences (`bounds.AggregatePrior`)

Densities are float64 (the mixture's quadratic terms cancel badly in float32;
see `bounds.log_q_matrix`).
"""

from __future__ import annotations

import math

import torch

from .bounds import AggregatePrior, log_q_matrix
from ..model import LOG_2PI


class StdNormal:
    source = "N(0,I)"

    def __init__(self, d: int):
        self.d = d

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return -0.5 * (LOG_2PI * self.d + (z ** 2).sum(-1))

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """d log P / dz, same shape and dtype as z."""
        return -z

    def sample(self, shape: tuple, gen: torch.Generator, device, dtype) -> torch.Tensor:
        return torch.randn((*shape, self.d), generator=gen, device=device, dtype=dtype)

    def scale(self) -> float:
        """A typical per-dimension width (first HMC step size)."""
        return 1.0


class Mixture:
    def __init__(self, agg: AggregatePrior, device="cpu"):
        self.source = agg.source
        self.mu = agg.mu.double().to(device)  # (M, d)
        self.logvar = agg.logvar.double().to(device)
        self.inv_var = torch.exp(-self.logvar)
        self.std = torch.exp(0.5 * self.logvar)
        self.m, self.d = self.mu.shape
        self.agg = agg

    def component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu_m, var_m) for every component: (..., d) -> (..., M), float64."""
        flat = z.reshape(-1, self.d).to(self.mu.device)
        return log_q_matrix(flat, self.mu, self.logvar).reshape(*z.shape[:-1], self.m)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(self.component_log_probs(z), -1) - math.log(self.m)).to(z.device)

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """sum_m resp_m(z) (mu_m - z) / var_m, resp = the components' posterior weights."""
        resp = torch.softmax(self.component_log_probs(z), -1)  # (..., M)
        zd = z.double().to(self.mu.device)
        g = resp @ (self.mu * self.inv_var) - zd * (resp @ self.inv_var)
        return g.to(device=z.device, dtype=z.dtype)

    def sample(self, shape: tuple, gen: torch.Generator, device, dtype) -> torch.Tensor:
        n = math.prod(shape)
        idx = torch.randint(self.m, (n,), generator=gen, device=device).to(self.mu.device)
        eps = torch.randn((n, self.d), generator=gen, device=device, dtype=torch.float64).to(self.mu.device)
        z = self.mu[idx] + self.std[idx] * eps
        return z.reshape(*shape, self.d).to(device=device, dtype=dtype)

    def scale(self) -> float:
        return float(self.std.median())


def make_prior(agg: AggregatePrior | None, d: int, device="cpu"):
    """StdNormal when no aggregate prior is given, else its Mixture."""
    return StdNormal(d) if agg is None else Mixture(agg, device)
