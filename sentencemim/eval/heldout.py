"""The tightest valid held-out bound for one model and one prior.

Each method of `HeldoutConfig.heldout_methods` is a family of proposals (or AIS), some
with settings (a widening factor, a mixture weight, ...). For every method:

  1. each setting of its grid is scored on *validation* sentences (never on the ones
     being reported), and the setting with the lowest mean bound is kept;
  2. the kept setting is run on the evaluated sentences: per-sentence bounds, ESS,
     the bound at several K (AIS: at several step counts).

The reported bound is the method with the lowest *validation* bound, so neither the
method nor its settings are chosen on the scored sentences. Ranking is by the mean
validation bound plus its delta-method standard deviation sqrt(1/ESS - 1/K) per
sentence (a method with few effective samples is noisy, and a noisy bound is lower by
luck as often as higher). A setting or method whose
weights have a heavy tail on validation (median Pareto k-hat > 0.7, see
`proposals.pareto_khat`) is passed over while a reliable one exists: otherwise a rare
huge weight that makes one validation estimate lucky would win the choice.

Which methods are then run on the scored sentences is `heldout_test`: "chosen" (the
default) runs the chosen method and q-only IWAE, whose samples the evaluation has drawn
anyway, and keeps every other method's validation figures under `validation_only`;
"all" runs every method there too (the comparison of `benchmarks/heldout_methods.py`).
The pass over the scored sentences is the costly one, so "chosen" costs about a third of
"all" with the default methods. Methods:

    q           q(z|x) itself (the classical IWAE)
    prior       the prior alone
    gauss       N(mean of q, s^2): s = q's std x a factor in `widen_factors`, or a fixed s
                in `fixed_stds` (an AE, whose variance head is untrained: fixed s only)
    defensive   a gauss + (1 - a) P, a in `defensive_weights`, gauss at its chosen setting
    fitted      a Gaussian fitted per sentence (`fit_steps` Adam steps on its ELBO, from
                gauss's chosen setting), widened by 1, 1.5 or 2, alone or 0.9 r + 0.1 P
    components  (training-mixture prior only) the `component_candidates` components
                nearest to q's mean, reweighted by p(x|mu_m); a = 1, 0.9 or 0.5 against P
    ais         AIS with HMC from the prior (`ais_steps`, `ais_chains`, ...)
    ais_fitted  AIS from fitted's Gaussian (at fitted's chosen widening, x 1 without a fitted
                run) to the posterior, HMC in that Gaussian's whitened coordinates: it starts
                near the posterior, so short runs are far tighter than AIS from the prior
                when the posterior is far from it (N(0, I) in 512 dimensions); on the PTB
                sMIM (512) long runs from the prior end lower (docs/evaluation.md)
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..config import AIS_METHODS, HeldoutConfig, _floats
from ..config import HELDOUT_METHODS as METHODS
from . import ais as ais_mod
from . import proposals as P
from .priors import Mixture, make_prior
from .scoring import Scorer, resolve_gradient_precision

KHAT_MAX = 0.7


def _score(lw: np.ndarray) -> tuple[float, float, float]:
    """(selection score, mean bound, median k-hat) of validation log weights (N, K). The score
    is the mean over sentences of bound + sqrt(1/ESS - 1/K), the delta-method standard
    deviation of the bound: a low figure that rests on a few lucky weights is not preferred."""
    nll = -P.log_mean_exp(lw, 1)
    sd = np.sqrt(np.clip(1.0 / P.ess(lw) - 1.0 / lw.shape[1], 0.0, None))
    return (float(np.nan_to_num(nll + sd, nan=np.inf).mean()), float(nll.mean()), khat_median(P.pareto_khat(lw)))


def khat_median(kh: np.ndarray) -> float:
    """Median over sentences of k-hat, +inf (a tail too extreme to fit) included; NaN only
    where no sentence had enough weights for a fit."""
    return float(np.nanmedian(kh)) if (~np.isnan(kh)).any() else float("nan")


def _pick(scores: dict):
    """The key with the lowest score among those whose median k-hat is <= KHAT_MAX (NaN:
    too few weights to tell, K < 20, accepted); among all when none is."""
    ok = {k: v for k, v in scores.items() if not v[2] > KHAT_MAX}
    return min(ok or scores, key=lambda k: scores[k][0])


class _Run:
    """Runs the methods for one model and prior; keeps fitted Gaussians and pilot decodes
    per (split, batch) so that a method's grid reuses them."""

    def __init__(self, model, prior, cfg: HeldoutConfig, k, objective, batch_size, max_rows, seed, device,
                 progress, precision):
        self.model, self.prior, self.cfg, self.k = model, prior, cfg, k
        self.deterministic = objective == "ae"
        self.kw = dict(batch_size=max(1, min(batch_size, 20)), max_rows=max_rows, seed=seed, device=device,
                       precision=precision)
        self.progress, self.seed, self.device = progress, seed, device
        steers = set(AIS_METHODS) | {"fitted"}
        self.grad_precision = resolve_gradient_precision(cfg.gradient_precision, device) \
            if steers & set(cfg.method_list()) else "fp32"
        self._fit_scorer = None
        self.fit_gen = torch.Generator(device=device).manual_seed(seed + 7)  # fits for AIS's start
        self.cache: dict = {}
        self.chosen: dict = {}  # method -> chosen setting (gauss feeds defensive and fitted)

    # ---------------------------------------------------------------- proposal factories
    def gauss_setting(self):
        """gauss's chosen setting; without a gauss run, q itself (an AE: std 0.3 around the mean)."""
        return self.chosen.get("gauss", ("std", 0.3) if self.deterministic else ("widen", 1.0))

    def _gauss(self, setting):
        kind, v = setting
        if kind == "widen":
            return lambda b, mu, lv: P.Gaussian(mu, 0.5 * lv + math.log(v))
        return lambda b, mu, lv: P.Gaussian(mu, torch.full_like(mu, math.log(v)))

    def _fitted_params(self, tag, b, mu, lv, scorer, gen):
        """The fit steers only (any proposal gives a valid bound): under a bf16 gradient
        precision its Adam steps use a bf16 Scorer's gradients."""
        key = (tag, tuple(b.index.tolist()))
        if key not in self.cache:
            if self.grad_precision == "bf16":
                if self._fit_scorer is None:
                    self._fit_scorer = Scorer(self.model, "bf16")
                scorer = self._fit_scorer
            r0 = self._gauss(self.gauss_setting())(b, mu, lv)
            self.cache[key] = P.fit_gaussian(scorer, b, self.prior, r0.mean, r0.logstd, self.cfg.fit_steps,
                                             self.cfg.fit_samples, self.cfg.fit_lr, gen)
        return self.cache[key]

    def _pilot(self, tag, b, mu, scorer):
        key = (tag, "pilot", tuple(b.index.tolist()))
        if key not in self.cache:
            self.cache[key] = P.pilot_components(scorer, b, self.prior, mu, self.cfg.component_candidates,
                                                 self.kw["max_rows"])
        return self.cache[key]

    def factory(self, method, setting, tag):
        prior = self.prior
        if method == "q":
            return lambda b, mu, lv, sc, g: P.Gaussian(mu, 0.5 * lv)
        if method == "prior":
            return lambda b, mu, lv, sc, g: P.FromPrior(prior, b.size, mu)
        if method == "gauss":
            f = self._gauss(setting)
            return lambda b, mu, lv, sc, g: f(b, mu, lv)
        if method == "defensive":
            f = self._gauss(self.gauss_setting())
            return lambda b, mu, lv, sc, g: P.Defensive(f(b, mu, lv), prior, setting, mu)
        if method == "fitted":
            c, a = setting

            def make(b, mu, lv, sc, g):
                m, ls = self._fitted_params(tag, b, mu, lv, sc, g)
                return P.Defensive(P.Gaussian(m, ls + math.log(c)), prior, a, mu)
            return make
        if method == "components":
            def make(b, mu, lv, sc, g):
                cand, log_pi = self._pilot(tag, b, mu, sc)
                return P.Defensive(P.Components(prior, cand, log_pi, mu), prior, setting, mu)
            return make
        raise ValueError(method)

    def grid(self, method) -> list:
        cfg = self.cfg
        if method == "gauss":
            widen = [] if self.deterministic else [("widen", v) for v in _floats(cfg.widen_factors, "widen_factors")]
            return widen + [("std", v) for v in _floats(cfg.fixed_stds, "fixed_stds")]
        if method == "defensive":
            return _floats(cfg.defensive_weights, "defensive_weights")
        if method == "fitted":
            return [(c, a) for c in (1.0, 1.5, 2.0) for a in (1.0, 0.9)]
        if method == "components":
            return [1.0, 0.9, 0.5]
        return [None]

    def describe(self, method, setting) -> str:
        g = self.gauss_setting()
        gd = f"q's std x {g[1]:g}" if g[0] == "widen" else f"std {g[1]:g}"
        if method == "q":
            return "q(z|x)"
        if method == "prior":
            return f"the prior ({self.prior.source})"
        if method == "gauss":
            kind, v = setting
            return f"N(mean of q, (q's std x {v:g})^2)" if kind == "widen" else f"N(mean of q, {v:g}^2 I)"
        if method == "defensive":
            return f"{setting:g} N(mean of q, {gd}) + {1 - setting:.3g} prior"
        if method == "fitted":
            c, a = setting
            return (f"Gaussian fitted per sentence ({self.cfg.fit_steps} Adam steps x {self.cfg.fit_samples} "
                    f"samples on its ELBO, {self.grad_precision} gradients, from {gd}), std x {c:g}" + (f"; {a:g} of it + {1 - a:.3g} prior" if a < 1 else ""))
        if method == "components":
            return (f"{min(self.cfg.component_candidates, self.prior.m)} mixture components nearest to q's mean, "
                    f"weighted by p(x|mu_m)" + (f"; {setting:g} of it + {1 - setting:.3g} prior" if setting < 1 else ""))
        if method in AIS_METHODS:
            c = self.cfg
            start = "the prior" if method == "ais" else f"{self.ais_base_what()} (geometric path)"
            where = "" if method == "ais" else " in its whitened coordinates"
            moves = ("the exact gradient" if self.grad_precision == "fp32" else
                     "a bfloat16 surrogate gradient (Metropolis test and weights exact float32)")
            return (f"AIS from {start}, sigmoid schedule, T={c.ais_step_list()[-1]} steps, {c.ais_chains} chains, "
                    f"HMC{where} with {c.ais_leapfrog} leapfrog steps moved by {moves}, step size per sentence "
                    f"adapted on {c.ais_pilot_chains} separate pilot chains")
        return method

    def _ais_widen(self) -> float:
        """ais_fitted's start: fitted's Gaussian at fitted's chosen widening (x 1 without a fitted run)."""
        return self.chosen.get("fitted", (1.0, 1.0))[0]

    def ais_base_what(self) -> str:
        return "the " + self.describe("fitted", (self._ais_widen(), 1.0))

    def ais_base(self, method, tag):
        """None (AIS from the prior) or, for ais_fitted, `base(batch, scorer)` -> the batch's
        fitted Gaussian (cached per sentences, so a reverse run ends where its forward run began)."""
        if method == "ais":
            return None
        c = self._ais_widen()

        def base(b, scorer):
            with torch.no_grad():
                mu, lv = self.model.encode(b.enc_in, b.lengths)
            m, ls = self._fitted_params(tag, b, mu, lv, scorer, self.fit_gen)
            return P.Gaussian(m, ls + math.log(c))
        return base

    # ---------------------------------------------------------------- running
    def is_pass(self, ds, method, setting, tag) -> np.ndarray:
        desc = f"held-out [{self.prior.source.split(', M=')[0]}] {method} {'' if setting is None else setting} ({tag})"
        return P.log_weights(self.model, ds, self.prior, self.factory(method, setting, tag), self.k,
                             progress=self.progress, desc=desc, **self.kw)

    def ais_pass(self, ds, steps, method="ais", tag="test") -> np.ndarray:
        cfg = self.cfg
        return ais_mod.ais(self.model, ds, self.prior, steps, cfg.ais_chains, cfg.ais_pilot_chains,
                           cfg.ais_leapfrog, self.kw["batch_size"], self.kw["max_rows"], self.seed, self.device,
                           self.progress, base=self.ais_base(method, tag), hmc_gradient=self.grad_precision)["log_w"]

    def ais_fields(self, method) -> dict:
        """What an AIS result says of itself (settings, chains, steps), wherever it is run."""
        steps, chains = self.cfg.ais_step_list()[-1], self.cfg.ais_chains
        return {"settings": self.describe(method, None), "samples": f"T={steps} steps x {chains} chains",
                "k": chains, "steps": steps, "convergence_what": "mean bound at each step count T"}

    def ais_curve(self, ds, method, tag) -> dict:
        """AIS at each step count of `ais_steps`: P.summarise of the longest run's weights, with
        the mean bound at every T under "convergence"."""
        curve, lw = {}, None
        for T in self.cfg.ais_step_list():
            lw = self.ais_pass(ds, T, method, tag)
            curve[T] = float(-P.log_mean_exp(lw, 1).mean())
        s = P.summarise(lw)
        s["convergence"] = curve
        return s


def heldout_bounds(model, test, valid, agg_prior, cfg: HeldoutConfig, k: int, objective: str | None = None,
                   batch_size: int = 20, max_rows: int = 2048, seed: int = 0, device="cpu", progress: bool = False,
                   precision: str = "fp32", q_logw: np.ndarray | None = None, valid_what: str = "",
                   stages=None, stage: str = "heldout") -> dict:
    """Every method of cfg for one prior (agg_prior None: N(0, I)). Returns
    {"chosen": method, "per_sentence": (N,) of the chosen method, "methods": {method: {...}}, ...}.
    stages (eval.stages.Stages): the choice and the scored sentences are kept as stage `stage`,
    the AIS subset (`ais_sentences`) as `stage`_ais_subset, so an interrupted evaluation
    resumes between them."""
    prior = make_prior(agg_prior, model.cfg.latent_dim, device)
    run = _Run(model, prior, cfg, k, objective, batch_size, max_rows, seed, device, progress, precision)
    aside = [m for m in cfg.method_list() if m in AIS_METHODS] if cfg.ais_sentences else []
    keep = stages.run if stages is not None else (lambda name, fn: fn())
    res = keep(stage, lambda: _choose_and_score(run, test, valid, aside, q_logw, valid_what))
    if not res:
        return {}
    res = dict(res)
    run.chosen = dict(res.pop("chosen_settings"))  # what the subset describes and ais_fitted starts from
    if aside:
        res["ais_subset"] = keep(stage + "_ais_subset",
                                 lambda: _ais_subset(run, test, aside, res["chosen"], res["per_method"],
                                                     res["methods"]))
    return res


def _choose_and_score(run: _Run, test, valid, aside: list, q_logw, valid_what: str) -> dict:
    """heldout_bounds' choice on validation sentences and its pass over the scored ones."""
    cfg, k, prior, model = run.cfg, run.k, run.prior, run.model
    seed, device, progress, max_rows = run.seed, run.device, run.progress, run.kw["max_rows"]
    # 1. validation: every setting of every method, then the method
    valid_res = {}
    for method in sorted(cfg.method_list(), key=METHODS.index):  # gauss before defensive, fitted before ais_fitted
        if method == "components" and not isinstance(prior, Mixture) or method in aside:
            continue
        t0 = time.perf_counter()
        if method in AIS_METHODS:
            vscore, vbest, v_khat = _score(run.ais_pass(valid, cfg.ais_step_list()[-1], method, "valid"))
            grid_scores, setting = {}, None
        else:
            grid_scores = {}
            for setting in run.grid(method):
                lw = run.is_pass(valid, method, setting, "valid")
                sc, nll, kh = _score(lw)
                grid_scores[run.describe(method, setting)] = (sc, setting, kh, nll)
            label = _pick(grid_scores)
            vscore, setting, v_khat, vbest = grid_scores[label]
            run.chosen[method] = setting
        valid_res[method] = dict(score=vscore, nll=vbest, khat=v_khat, grid=grid_scores, setting=setting,
                                 time_s=time.perf_counter() - t0)
    if not valid_res:
        return {}
    chosen = _pick({m: (v["score"], None, v["khat"]) for m, v in valid_res.items()})
    # 2. the scored sentences: the chosen method and q-only IWAE (every method with heldout_test "all")
    tested = [m for m in valid_res if cfg.heldout_test == "all" or m in (chosen, "q")]
    methods, per = {}, {}
    for method in tested:
        v, t0 = valid_res[method], time.perf_counter()
        if method in AIS_METHODS:
            s = run.ais_curve(test, method, "test")
            entry = run.ais_fields(method)
        else:
            if method == "q" and q_logw is not None and q_logw.shape[1] == k:
                lw = q_logw  # the samples of the q-only IWAE computed beside it
            else:
                lw = run.is_pass(test, method, v["setting"], "test")
            s = P.summarise(lw)
            entry = {"settings": run.describe(method, v["setting"]), "samples": f"K={k}", "k": k,
                     "convergence_what": "mean bound over the first K samples"}
        entry.update({
            "nll_per_sentence": float(s["nll"].mean()), "valid_nll_per_sentence": v["nll"],
            "valid_grid": {lab: {"nll_per_sentence": nll, "score": sc, "khat_median": kh}
                           for lab, (sc, _, kh, nll) in v["grid"].items()},
            "valid_score": v["score"],
            "valid_khat_median": v["khat"],
            "khat_median": khat_median(s["khat"]),
            "khat_share_above_0.7": float(np.mean(s["khat"] > KHAT_MAX)),
            "ess_mean": float(np.nanmean(s["ess"])), "ess_median": float(np.nanmedian(s["ess"])),
            "ess_min": float(np.nanmin(s["ess"])), "convergence": s["convergence"],
            "valid_time_s": v["time_s"], "time_s": v["time_s"] + time.perf_counter() - t0})
        methods[method], per[method] = entry, s["nll"]
    validation_only = {m: {"valid_nll_per_sentence": v["nll"], "valid_score": v["score"],
                           "valid_khat_median": v["khat"], "time_s": v["time_s"],
                           "settings": run.describe(m, v["setting"])}
                       for m, v in valid_res.items() if m not in methods}
    extra = {}
    ais_run = [m for m in methods if m in AIS_METHODS]
    if cfg.bdmc_sentences and ais_run:  # for the chosen AIS method, else the first that ran
        m = chosen if chosen in ais_run else ais_run[0]
        d = ais_mod.bdmc(model, prior, cfg.bdmc_sentences, cfg.ais_step_list()[-1], cfg.ais_chains,
                         cfg.ais_pilot_chains, cfg.ais_leapfrog, seed, device, progress, max_rows,
                         base=run.ais_base(m, "bdmc"), base_what="" if m == "ais" else f"from {run.ais_base_what()}",
                         hmc_gradient=run.grad_precision)
        extra["bdmc"] = {k: v for k, v in d.items() if k not in ("upper", "lower")}
        extra["bdmc"]["method"] = m
    return {**extra, "chosen": chosen, "per_sentence": per[chosen], "per_method": per, "methods": methods,
            "chosen_settings": dict(run.chosen),
            "validation_only": validation_only,
            "prior": prior.source, "valid_what": valid_what,
            "what": f"the method with the lowest bound on {valid_what or 'the validation sentences'} among "
                    f"{', '.join(valid_res)}, ranked by mean bound + its estimated standard deviation "
                    f"sqrt(1/ESS - 1/K), those with median Pareto k-hat <= {KHAT_MAX} there first; settings "
                    "also chosen there"}


def _ais_subset(run: _Run, test, methods: list, chosen: str, per: dict, described: dict) -> dict:
    """AIS on a fixed random `ais_sentences` of the scored sentences (`ais_sentences` > 0),
    beside the chosen method and q-only IWAE on the same ones; not part of the choice.
    Under the training mixture HMC cannot move between its narrow components (AIS would be
    sampling from the prior), so it is skipped there, and says so."""
    cfg = run.cfg
    if isinstance(run.prior, Mixture):
        return {"skipped": "AIS is not run under the training mixture: HMC cannot move between its narrow "
                           "components, so it would be importance sampling from the prior ('components' is "
                           "this prior's method)"}
    run.fit_gen = torch.Generator(device=run.device).manual_seed(run.seed + 11)  # ais_fitted's fits: own stream
    pos = test.subset_index(cfg.ais_sentences, run.seed)
    sub = test.take(pos)
    out = {"index": pos, "sentences": len(pos), "of": len(test), "seed": run.seed, "methods": {},
           "per_method": {}, "what": (f"AIS on a fixed random {len(pos)} of the {len(test)} scored sentences "
                                      f"(seed {run.seed}), beside the other methods on the same sentences; "
                                      "not part of the choice of the reported bound")}
    for name in (chosen, "q"):
        if name in per:
            out["methods"].setdefault(name, {"nll_per_sentence": float(per[name][pos].mean()), "same_samples": True,
                                             "settings": described[name]["settings"]})  # as run, maybe elsewhere
    for method in methods:
        t0 = time.perf_counter()
        s = run.ais_curve(sub, method, "ais-subset")
        out["methods"][method] = {
            **run.ais_fields(method), "nll_per_sentence": float(s["nll"].mean()), "convergence": s["convergence"],
            "ess_mean": float(np.nanmean(s["ess"])), "ess_min": float(np.nanmin(s["ess"])),
            "time_s": time.perf_counter() - t0}
        out["per_method"][method] = s["nll"]
    return out


def entry_fields(res: dict, bound: dict) -> dict:
    """The report entry of a `heldout_bounds` result: `bound` (evaluate's labelled bound of
    the chosen method's per-sentence values) plus the method, its settings, ESS, k-hat,
    convergence, and every method's own figures."""
    m = res["methods"][res["chosen"]]
    out = dict(bound)
    out.update({k: m[k] for k in ("settings", "k", "steps", "ess_mean", "ess_median", "ess_min", "khat_median",
                                  "khat_share_above_0.7", "convergence", "convergence_what",
                                  "valid_nll_per_sentence") if k in m})
    out.update(method=res["chosen"], chosen_on=res["what"], methods=res["methods"],
               validation_only=res.get("validation_only", {}))
    for k in ("bdmc", "ais_subset"):
        if k in res:
            out[k] = {n: v for n, v in res[k].items() if n != "per_method"}
    out["what"] += (f"; {res['what']}; ESS = (sum w)^2 / sum w^2 per sentence (of {m['k']} "
                    f"{'chains' if 'steps' in m else 'samples'})")
    return out


def _khat_text(b: dict, short: bool = False) -> str:
    """The Pareto k-hat summary, or why there is none: K too small for a tail fit (NaN), or
    a tail so extreme that the fit overflows (+inf; results kept before 2026-12-01 have NaN
    there too)."""
    med = b.get("khat_median", float("nan"))
    if med == math.inf:
        return "k-hat median inf (tail too extreme to fit)" if short else \
            f"Pareto k-hat median inf (tails too extreme to fit; {100 * b['khat_share_above_0.7']:.0f}% of sentences > 0.7)"
    if not math.isfinite(med):
        return "k-hat n/a (no tail fit)" if short else \
            "Pareto k-hat n/a (no tail fit: too few samples, or weights too extreme)"
    if short:
        return f"k-hat median {med:.2f}"
    return f"Pareto k-hat median {med:.2f} ({100 * b['khat_share_above_0.7']:.0f}% of sentences > 0.7)"


def format_heldout(b: dict) -> list[str]:
    """Lines for one tightest-bound entry: method, settings, ESS, k-hat, convergence, the other methods."""
    conv = ", ".join(f"{k}: {v:.3f}" for k, v in b["convergence"].items())
    unit = "chains" if "steps" in b else "samples"
    L = [f"  tightest held-out bound, prior {b['prior']}: {b['nll_per_sentence']:.3f} nats/sentence by "
         f"'{b['method']}' [{b['settings']}], {b['samples']}; ESS mean {b['ess_mean']:.1f} / median "
         f"{b['ess_median']:.1f} / min {b['ess_min']:.1f} of {b['k']} {unit}; {_khat_text(b)}; "
         f"{b['convergence_what']}: {conv}; chosen on {b['chosen_on'].split(' on ', 1)[-1]}"]
    for name, m in b["methods"].items():
        L.append(f"    {name:<11} {m['nll_per_sentence']:>10.3f} (validation {m['valid_nll_per_sentence']:.3f}); "
                 f"ESS mean {m['ess_mean']:.1f}; {_khat_text(m, short=True)}; {m['settings']}; "
                 f"{m['time_s']:.0f} s")
    for name, m in b.get("validation_only", {}).items():
        L.append(f"    {name:<11} {'-':>10} (validation {m['valid_nll_per_sentence']:.3f}; not run on these "
                 f"sentences: not chosen); {m['settings']}; {m['time_s']:.0f} s")
    a = b.get("ais_subset")
    if a and "skipped" in a:
        L.append(f"    ais         {'-':>10} ({a['skipped']})")
    elif a:
        L.append(f"    on a fixed random {a['sentences']} of these {a['of']} sentences (AIS's cost; not in the choice):")
        for name, m in a["methods"].items():
            conv = ", ".join(f"T={k}: {v:.3f}" for k, v in m.get("convergence", {}).items())
            L.append(f"      {name:<11} {m['nll_per_sentence']:>10.3f}" + (
                f"; ESS mean {m['ess_mean']:.1f} of {m['k']} chains; {conv}; {m['settings']}; {m['time_s']:.0f} s"
                if "steps" in m else f" (the same samples as above, on these sentences); {m['settings']}"))
    if "bdmc" in b:
        d = b["bdmc"]
        L.append(f"    BDMC ({d['what']}): upper {d['upper_mean']:.3f}, lower {d['lower_mean']:.3f}, "
                 f"gap {d['gap_mean']:.3f}")
    return L
