"""Evaluation: per-sentence terms kept in dataset order, aggregated once
(sum of nats / sum of tokens, never a mean of batch means).

Bounds on the negative log-likelihood of a test set D of N sentences (nats), each
printed with its bound, prior, sample count and <eos> convention:

  MELBO (paper eqn 16):  NLL_hat = -(1/N) sum_i (1/N_z) sum_j log p(x_i|z_ij) + log N,  z_ij ~ q(z|x_i)
      The prior is the test set's own aggregated posterior (hence log N). Repeated R
      times for a mean and std, as in the paper. NOT a held-out likelihood: it tends
      to "reconstruction NLL + log N" for any near-deterministic auto-encoder.
  ELBO (eqn 11), prior N(0, I):  E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)), analytic KL,
      the expectation over the K IWAE samples (or the N_z MELBO samples without IWAE);
      and the single-sample form -log p(x|z_1) - log N(z_1) + log q(z_1|x).
  IWAE_K (bounds.py), prior N(0, I) and prior = mixture of the posteriors of M
      *training* sentences. Both are held-out bounds; IWAE_1 is the single-sample ELBO.
  Tightest held-out bound (sentencemim.eval.heldout), both priors: importance sampling
      with better proposals than q (widened q, defensive mixtures, fitted Gaussians,
      reweighted mixture components) and AIS, settings and method chosen on validation
      sentences, each with its ESS and the bound at several K (or AIS steps).

An AE (objective "ae") has a deterministic encoder: its reconstruction, MELBO and BLEU
use z = the posterior mean; its held-out bounds use proposals centred on the mean.

Perplexity = exp(sum of sentence NLLs / number of tokens), two conventions:
  words+<eos>   <eos> in numerator and denominator (what peers report; the default)
  paper         numerator without the <eos> terms, denominator with one <eos> per
                sentence (the authors' code; only for comparing with the paper's tables).
                Only defined where the bound splits into token terms (MELBO, ELBO with
                analytic KL); an importance-weighted log-mean-exp does not split.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from . import bounds
from .data import Dataset
from .decoding import decode
from .entropy import knn_entropy, std_normal_entropy
from .eval.heldout import HeldoutConfig, entry_fields, format_heldout, heldout_bounds
from .metrics import bleu_scores
from .model import SentenceAE, kl_std_normal
from .progress import Progress
from .scoring import Scorer
from .vocab import Vocab

EOS_CONVENTIONS = {
    "ppl_words_eos": "exp(sum NLL / (words + <eos>)); <eos> in numerator and denominator",
    "ppl_paper": "exp((sum NLL - <eos> terms) / (words + <eos>)); the paper's convention",
}
# What each per-sentence array holds (saved with them as `_what`); nats, dataset order.
PER_SENTENCE_WHAT = {
    "tokens": "words + 1 <eos>",
    "rec": "-log p(x|z), z ~ q(z|x), mean over N_z samples, words + <eos> (first MELBO repeat)",
    "rec_eos": "the <eos> term of rec",
    "kl": "KL(q(z|x) || N(0,I)), analytic",
    "melbo": "rec + log N: the sentence's term of the MELBO (eqn 16), prior = test-set aggregate posterior",
    "elbo": "E_q[-log p(x|z)] + analytic KL, prior N(0,I)",
    "rec_q": "E_q[-log p(x|z)] over the K IWAE samples",
    "elbo_single": "single-sample -ELBO, prior N(0,I)",
    "iwae": "-IWAE_K, prior N(0,I)",
    "elbo_single_train_prior": "single-sample -ELBO, prior = training aggregate posterior",
    "iwae_train_prior": "-IWAE_K, prior = training aggregate posterior",
    "heldout": "tightest held-out bound, prior N(0,I) (method chosen on validation sentences; see the report)",
    "heldout_train_prior": "tightest held-out bound, prior = training aggregate posterior (method chosen on "
                           "validation sentences)",
    "true_nll": "exact -log p(x) under the generating HMM (corpus synthetic)",
    "nll": "exact -log p(x) of the language model, words + <eos>",
    "nll_eos": "the <eos> term of nll",
    "mu_var_per_dim": "Var over sentences of E_q[z_u], per latent dimension (active units), not per sentence",
}


PRECISION_WHAT = {
    "fp32": "float32 decoder scoring (exact up to float rounding)",
    "bf16": "bfloat16 vocabulary projection: approximate, per-sentence deviation std ~0.05 nats "
            "(docs/evaluation.md); the bounds are not guaranteed bounds",
}


def per_sentence_arrays(per: dict) -> dict:
    """The per-sentence arrays plus their descriptions (`_what`, JSON), ready for np.savez."""
    import json
    return {**per, "_what": np.array(json.dumps({k: PER_SENTENCE_WHAT.get(k, "") for k in per}))}


# (z mode, decoding method). The first is the paper's: the authors' code reconstructs from
# z ~ q(z|x) by sampling at temperature 1 (REFERENCE.md), so that mode goes beside the
# paper's BLEU, with R repeats; the greedy modes are ours, labelled, decoded once.
BLEU_MODES = (("sample", "sample"), ("sample", "greedy"), ("mean", "greedy"))


@torch.no_grad()
def sentence_terms(model: SentenceAE, ds: Dataset, n_z: int = 1, batch_size: int = 100,
                   seed: int = 0, device="cpu", progress: bool = False, at_mean: bool = True,
                   precision: str = "fp32", deterministic: bool = False, desc: str = "evaluate") -> dict:
    """Per-sentence arrays in dataset order: rec (mean over n_z samples z ~ q of
    -log p(x|z); z = mu for a deterministic encoder), rec_eos (its <eos> part), rec_mean
    (at z = mu; only with at_mean), kl (analytic), tokens (words + 1). Seeded; the global
    RNG is left untouched."""
    model.eval()
    N = len(ds)
    res = {k: np.zeros(N) for k in ("rec", "rec_eos", "rec_mean", "rec_mean_eos", "kl")}
    res["tokens"] = np.zeros(N, dtype=np.int64)
    batches = ds.eval_batches(batch_size)
    bar = Progress(len(batches), desc, enabled=progress)
    scorer = Scorer(model, precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for idx in batches:
            b = ds.batch(idx).to(device)
            mu, logvar = model.encode(b.enc_in, b.lengths)
            z = (mu[None] if deterministic else
                 torch.stack([model.reparameterize(mu, logvar) for _ in range(n_z)]))  # (n_z, B, d)
            if at_mean:
                z = torch.cat([z, mu[None]])
            r, e = scorer.nll(b.dec_in, b.dec_tgt, z)
            nz = 1 if deterministic else n_z
            terms = {"rec": r[:nz].double().mean(0), "rec_eos": e[:nz].double().mean(0),
                     "kl": kl_std_normal(mu, logvar)}
            if at_mean:
                terms["rec_mean"], terms["rec_mean_eos"] = r[nz], e[nz]
            i = b.index.cpu().numpy()
            for k, v in terms.items():
                res[k][i] = v.double().cpu().numpy()
            res["tokens"][i] = b.lengths.cpu().numpy()
            bar.update()
    bar.close()
    return res


def _exp(x: float) -> float:
    """exp that gives inf instead of raising (a bound can be thousands of nats per token)."""
    return math.exp(x) if x < 700 else math.inf


def perplexities(nll_sum: float, eos_sum: float | None, tokens: int) -> dict:
    return {"ppl_words_eos": _exp(nll_sum / tokens),
            "ppl_paper": None if eos_sum is None else _exp((nll_sum - eos_sum) / tokens)}


def melbo(rec: np.ndarray, rec_eos: np.ndarray, tokens: np.ndarray) -> dict:
    """Eqn 16 from per-sentence reconstruction terms."""
    N = len(rec)
    nll = rec.mean() + math.log(N)
    return {"nll_per_sentence": nll, "log_N": math.log(N),
            **perplexities(N * nll, rec_eos.sum(), int(tokens.sum()))}


def melbo_vs_size(rec: np.ndarray, sizes, trials: int = 500, seed: int = 0) -> dict:
    """Paper Fig. 5: the MELBO of random subsets of K sentences (without replacement),
    mean and std over `trials` subsets for each K. rec: (N,) per-sentence -log p(x|z)."""
    rng = np.random.default_rng(seed)
    N = len(rec)
    mean, std = [], []
    for K in sizes:
        vals = [rec[rng.choice(N, K, replace=False)].mean() + math.log(K) for _ in range(trials)]
        mean.append(float(np.mean(vals)))
        std.append(float(np.std(vals)))
    return {"sizes": [int(k) for k in sizes], "mean": mean, "std": std, "trials": trials}


def melbo_size_to_match(rec_mean: float, target_nll: float) -> float:
    """log10 of the test-set size K at which mean rec + log K reaches target_nll,
    extrapolating with the mean reconstruction term held fixed (paper App. B)."""
    return (target_nll - rec_mean) / math.log(10)


def _bound(name, prior, samples, per_sentence, tokens, eos=None, std=None) -> dict:
    """One labelled NLL bound: per-sentence values aggregated once."""
    N, T = len(per_sentence), int(tokens.sum())
    out = {"bound": name, "prior": prior, "samples": samples,
           "nll_per_sentence": float(per_sentence.sum() / N),
           **perplexities(float(per_sentence.sum()), None if eos is None else float(eos.sum()), T)}
    if std is not None:
        out.update(std)
    out["what"] = (f"{name} upper bound on NLL; prior {prior}; {samples}; PPL [words+<eos>]"
                   + (" and [paper convention]" if eos is not None else ""))
    return out


@torch.no_grad()
def reconstructions(model, ds: Dataset, vocab: Vocab, z_mode: str = "sample", method: str = "greedy",
                    batch_size: int = 100, seed: int = 0, device="cpu") -> list[list[str]]:
    """Decode every sentence of ds from z ~ q(z|x) (z_mode 'sample') or z = mu ('mean')."""
    model.eval()
    out: list = [None] * len(ds)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for idx in ds.eval_batches(batch_size):
            b = ds.batch(idx).to(device)
            mu, logvar = model.encode(b.enc_in, b.lengths)
            z = model.reparameterize(mu, logvar) if z_mode == "sample" else mu
            ids = decode(model, z, max_len=int(b.lengths.max()) + 20, method=method, generator=gen)
            for i, seq in zip(b.index.tolist(), ids):
                out[i] = vocab.decode(seq)
    return out


def bleu_report(model, ds, vocab, modes=BLEU_MODES, batch_size=100, seed=0, device="cpu",
                repeats: int = 1, progress: bool = False, deterministic: bool = False) -> list[dict]:
    """BLEU of reconstructions in each (z mode, decoding) mode. A mode with any randomness
    (z ~ q or sampled decoding) is decoded `repeats` times with seeds seed, seed+1, ...: its
    scores are the mean over repeats, with the std beside them (`*_std`); the first repeat's
    examples are kept. Deterministic modes (z = mean, greedy) are decoded once.
    deterministic (an AE): z = the posterior mean in every mode."""
    refs = [vocab.decode(s.tolist()) for s in ds.seqs]
    out = []
    for z_mode, method in modes:
        z_here = "mean" if deterministic else z_mode
        r_here = repeats if (z_here == "sample" or method == "sample") else 1
        bar = Progress(r_here, f"BLEU ({z_here} z, {method})", enabled=progress)
        scores, first = [], None
        for r in range(r_here):
            hyps = reconstructions(model, ds, vocab, z_here, method, batch_size, seed + r, device)
            scores.append(bleu_scores(refs, hyps))
            first = first or hyps
            bar.update()
        bar.close()
        z_what = ("z = mean of q(z|x) (AE: deterministic encoder)" if deterministic else
                  "z ~ q(z|x)" if z_mode == "sample" else "z = mean of q(z|x)")
        dec_what = "greedy decoding" if method == "greedy" else "sampling at temperature 1"
        rep_what = f", mean of R={r_here} repeats" if r_here > 1 else ""
        keys = scores[0].keys()
        out.append({"z": z_mode, "decoding": method, "repeats": r_here,
                    "what": f"reconstruction from {z_what}, {dec_what}{rep_what}",
                    **{k: float(np.mean([s[k] for s in scores])) for k in keys},
                    **{k + "_std": float(np.std([s[k] for s in scores])) for k in keys},
                    "examples": [(" ".join(r), " ".join(h)) for r, h in list(zip(refs, first))[:5]]})
    return out


def synthetic_truth(ds: Dataset, vocab: Vocab) -> np.ndarray:
    """Exact -log p(x) of each sentence of the built-in synthetic corpus (its HMM)."""
    from .errors import UserError
    from .synthetic import true_nll
    if ds.oov:
        raise UserError("the test split has words outside the model's vocabulary; the true NLL of the "
                        "synthetic corpus would not match the model's event space")
    return true_nll([vocab.decode(s.tolist()) for s in ds.seqs])


@torch.no_grad()
def evaluate_lm(model: SentenceAE, ds: Dataset, batch_size: int = 100, device="cpu", progress: bool = False,
                precision: str = "fp32", true_nll: np.ndarray | None = None) -> dict:
    """The language model (objective lm, no latent): its NLL is exact, -log p(x) =
    sum over words + <eos> of -log p(w_t | w_<t), so it is reported once, not bounded."""
    model.eval()
    N = len(ds)
    nll, eos = np.zeros(N), np.zeros(N)
    tokens = np.zeros(N, dtype=np.int64)
    scorer = Scorer(model, precision)
    t0 = time.perf_counter()
    batches = ds.eval_batches(batch_size)
    bar = Progress(len(batches), "exact NLL", enabled=progress)
    for idx in batches:
        b = ds.batch(idx).to(device)
        none = torch.zeros(1, b.size, 0, device=device)  # (S=1, B, d=0): no latent code
        r, e = scorer.nll(b.dec_in, b.dec_tgt, none)
        i = b.index.cpu().numpy()
        nll[i], eos[i] = r[0].double().cpu().numpy(), e[0].double().cpu().numpy()
        tokens[i] = b.lengths.cpu().numpy()
        bar.update()
    bar.close()
    T = int(tokens.sum())
    exact = _bound("exact NLL", "none (language model, no latent)", "exact, no sampling", nll, tokens, eos)
    exact["bound"] = "exact"
    exact["what"] = ("exact -log p(x) of the GRU language model (not a bound); PPL [words+<eos>] and "
                     "[paper convention]")
    rep = {"sentences": N, "tokens_words_eos": T, "words": T - N, "language_model": True,
           "exact": exact, "conventions": dict(EOS_CONVENTIONS), "precision": precision,
           "precision_what": PRECISION_WHAT[precision], "timing_s": {"exact": time.perf_counter() - t0},
           "per_sentence": {"tokens": tokens, "nll": nll, "nll_eos": eos}}
    if true_nll is not None:
        rep["truth"] = {**_bound("true NLL", "the generating HMM", "exact (forward algorithm)",
                                 np.asarray(true_nll, dtype=np.float64), tokens), "bound": "exact",
                        "what": "exact -log p(x) under the HMM that generated the corpus"}
        rep["per_sentence"]["true_nll"] = np.asarray(true_nll, dtype=np.float64)
    return rep


def evaluate(model: SentenceAE, ds: Dataset, vocab: Vocab, n_z: int = 1, repeats: int = 10,
             seed: int = 0, batch_size: int = 100, bleu: bool = True, device="cpu",
             progress: bool = False, iwae_k: int = 100, train_prior: bounds.AggregatePrior | None = None,
             true_nll: np.ndarray | None = None, latent: bool = True, max_rows: int = 2048,
             precision: str = "fp32", objective: str | None = None, heldout: HeldoutConfig | None = None,
             valid_ds: Dataset | None = None, valid_what: str = "", bound_sentences: int = 0) -> dict:
    """The evaluation report (see module docstring); all NLLs in nats. Per-sentence
    values are under report["per_sentence"] (dataset order) for histograms. With
    `heldout` and `valid_ds` (sentences disjoint from ds, for choosing settings), the
    tightest held-out bounds are added under "heldout" and "heldout_train_prior". A
    language model (no latent) gets its exact NLL instead (`evaluate_lm`).

    `bound_sentences` (0 = all): the importance-weighted bounds (IWAE, single-sample ELBO
    with a prior, the held-out methods) are computed on a fixed random subset of this
    many sentences (`Dataset.subset_index`, seed `seed`), the costly part of an
    evaluation; their entries say so ("sentences", "subset"), their per-sentence arrays
    are over the subset, and per_sentence["bound_index"] holds its indices. The ELBO is
    then taken from the MELBO repeats (R samples of z ~ q per sentence) on every sentence,
    like the MELBO, BLEU and reconstruction."""
    if not model.has_latent:
        return evaluate_lm(model, ds, batch_size, device, progress, precision, true_nll)
    N = len(ds)
    timing, t0 = {}, time.perf_counter()
    det = objective == "ae"  # deterministic encoder: z = mean, every repeat is the same
    runs = [sentence_terms(model, ds, n_z, batch_size, seed + r, device, progress, at_mean=r == 0,
                           precision=precision, deterministic=det, desc=f"MELBO repeat {r + 1}/{repeats}")
            for r in range(1 if det else repeats)]
    runs = runs * repeats if det else runs
    first = runs[0]
    tokens = first["tokens"]
    T = int(tokens.sum())
    mel = [melbo(r["rec"], r["rec_eos"], tokens) for r in runs]
    per = {"tokens": tokens, "rec": first["rec"], "rec_eos": first["rec_eos"], "kl": first["kl"],
           "melbo": first["rec"] + math.log(N)}
    rec_sum = first["rec"].sum()
    keys = ("nll_per_sentence", "ppl_words_eos", "ppl_paper")
    report = {
        "sentences": N, "tokens_words_eos": T, "words": T - N, "seed": seed,
        "reconstruction": {
            "what": ("-log p(x|z) per sentence, z = mean of q(z|x) (AE: deterministic encoder), words + <eos>, nats"
                     if det else f"-log p(x|z) per sentence, z ~ q(z|x) ({n_z} sample(s)), words + <eos>, nats"),
            "nll_per_sentence": rec_sum / N,
            "nll_per_sentence_at_mean_z": first["rec_mean"].sum() / N,
            **perplexities(rec_sum, first["rec_eos"].sum(), T),
        },
        "kl": {"what": "KL(q(z|x) || N(0,I)) per sentence, analytic, nats", "mean": float(first["kl"].mean())},
        "melbo": {
            **_bound("MELBO (eqn 16)", "test-set aggregate posterior [uses test data: NOT held-out]",
                     ("z = mean of q (AE)" if det else f"N_z={n_z} per sentence") + f", mean of R={repeats} repeats",
                     first["rec"] + math.log(N), tokens, first["rec_eos"]),
            "n_z": n_z, "repeats": repeats, "log_N": math.log(N),
            **{k: float(np.mean([m[k] for m in mel])) for k in keys},
            **{k + "_std": float(np.std([m[k] for m in mel])) for k in keys},
        },
        "conventions": dict(EOS_CONVENTIONS),
        "precision": precision,
        "precision_what": PRECISION_WHAT[precision],
    }
    timing["melbo_reconstruction"] = time.perf_counter() - t0
    sub_idx = ds.subset_index(bound_sentences, seed) if iwae_k and 0 < bound_sentences < N else None
    if sub_idx is not None:
        bds, btok, sub_note = ds.take(sub_idx), tokens[sub_idx], f"; on {len(sub_idx)} of {N} sentences (seed {seed})"
        sub_info = {"sentences": len(sub_idx), "subset": {"n": len(sub_idx), "of": N, "seed": seed,
                                                          "what": "fixed random subset (Dataset.subset_index)"}}
        rec_r = np.mean([r["rec"] for r in runs], 0)  # E_q over the R MELBO repeats, every sentence
        elbo = rec_r + first["kl"]
        report["elbo"] = {**_bound("ELBO", "N(0,I)", f"R={repeats} samples of z ~ q per sentence (the MELBO "
                                   "repeats) for E_q[-log p(x|z)], analytic KL", elbo, tokens,
                                   np.mean([r["rec_eos"] for r in runs], 0)), "sentences": N}
        per.update(elbo=elbo, bound_index=np.asarray(sub_idx))
        report["bound_subset"] = {**sub_info["subset"], "what": (
            f"IWAE and the held-out bounds on {len(sub_idx)} of the {N} sentences (a fixed random subset, seed "
            f"{seed}); the MELBO, ELBO, reconstruction and BLEU on all {N}")}
    else:
        bds, btok, sub_note, sub_info = ds, tokens, "", {}
    if iwae_k:
        t0 = time.perf_counter()
        w = bounds.importance_weights(model, bds, iwae_k, train_prior, batch_size=max(1, min(batch_size, 20)),
                                      max_rows=max_rows, seed=seed, device=device, progress=progress,
                                      precision=precision)
        rec_q, eos_q = w["rec"].mean(1), w["rec_eos"].mean(1)  # E_q over the K samples
        if sub_idx is None:
            elbo = rec_q + w["kl"]
            report["elbo"] = _bound("ELBO", "N(0,I)", f"K={iwae_k} for E_q[-log p(x|z)], analytic KL",
                                    elbo, tokens, eos_q)
            per["elbo"] = elbo
        per["rec_q"] = rec_q
        for tag, lp, prior in (("", w["log_p"], "N(0,I)"),
                               ("_train_prior", w.get("log_agg"), train_prior and train_prior.source)):
            if lp is None:
                continue
            single = bounds.single_sample_elbo_nll(w["rec"], w["log_q"], lp)
            iw = bounds.iwae_nll(w["rec"], w["log_q"], lp)
            report["elbo_single" + tag] = {**_bound("ELBO (single sample)", prior, "1 sample" + sub_note, single,
                                                    btok), **sub_info}
            report["iwae" + tag] = {**_bound(f"IWAE_{iwae_k}", prior, f"K={iwae_k}" + sub_note,
                                             iw, btok), "k": iwae_k, **sub_info}
            per["elbo_single" + tag], per["iwae" + tag] = single, iw
        if train_prior is not None:
            report["iwae_train_prior"]["m"] = train_prior.m
        timing[f"iwae_k{iwae_k}"] = time.perf_counter() - t0
        if heldout is not None and heldout.method_list() and valid_ds is not None:
            for tag, agg, lp in (("", None, w["log_p"]), ("_train_prior", train_prior, w.get("log_agg"))):
                if lp is None:
                    continue
                t0 = time.perf_counter()
                res = heldout_bounds(model, bds, valid_ds, agg, heldout, iwae_k, objective, batch_size, max_rows,
                                     seed, device, progress, precision, q_logw=-w["rec"] + lp - w["log_q"],
                                     valid_what=valid_what)
                if res:
                    m = res["methods"][res["chosen"]]
                    b = _bound(f"tightest ({res['chosen']})", res["prior"], m["samples"] + sub_note,
                               res["per_sentence"], btok)
                    report["heldout" + tag] = {**entry_fields(res, b), **sub_info}
                    per["heldout" + tag] = res["per_sentence"]
                timing["heldout" + tag] = time.perf_counter() - t0
    else:
        elbo = first["rec"] + first["kl"]
        report["elbo"] = _bound("ELBO", "N(0,I)", f"N_z={n_z} for E_q[-log p(x|z)], analytic KL",
                                elbo, tokens, first["rec_eos"])
        per["elbo"] = elbo
    if true_nll is not None:
        report["truth"] = {**_bound("true NLL", "the generating HMM", "exact (forward algorithm)",
                                    np.asarray(true_nll, dtype=np.float64), tokens),
                           "what": "exact -log p(x) under the HMM that generated the corpus"}
        report["truth"]["bound"] = "exact"
        per["true_nll"] = np.asarray(true_nll, dtype=np.float64)
        if sub_idx is not None:  # the reference for the bounds computed on the subset
            report["truth"]["nll_per_sentence_on_bound_subset"] = float(per["true_nll"][sub_idx].mean())
    if latent:
        t0 = time.perf_counter()
        mu, logvar = bounds.posteriors(model, ds, batch_size, device)
        gen = torch.Generator().manual_seed(seed)
        z = mu + torch.randn(mu.shape, generator=gen, dtype=mu.dtype) * torch.exp(0.5 * logvar)
        n_active, var = bounds.active_units(mu)
        d = mu.shape[1]
        report["latent"] = {
            "what": "latent diagnostics on this split",
            "dim": d,
            "mutual_information": bounds.mutual_information(mu, logvar, seed),
            "mutual_information_what": "I(x;z) estimate of He et al. 2019 (log q(z|x) at the sample), one z per sentence, aggregate "
                                       f"posterior over this split; at most log N = {math.log(N):.3f} nats",
            "active_units": n_active, "active_units_what": "dims with Var_x(E_q[z_u]) > 0.01",
            "entropy_z": knn_entropy(z.numpy(), k=3),
            "entropy_mu": knn_entropy(mu.numpy(), k=3),
            "entropy_std_normal": std_normal_entropy(d),
            "entropy_what": "Kozachenko-Leonenko k=3 max-norm kNN estimate (nats) of z ~ q(z|x), one sample per "
                            "sentence (entropy_z) and of the posterior means (entropy_mu, the AE's code); "
                            "N(0,I_d) reference d/2 (1 + log 2 pi); reads high above ~16 dims",
        }
        per["mu_var_per_dim"] = var  # (d,), for the active-unit plot
        timing["latent"] = time.perf_counter() - t0
    if bleu:
        t0 = time.perf_counter()
        modes = bleu_report(model, ds, vocab, BLEU_MODES, batch_size, seed, device, repeats, progress,
                            deterministic=det)
        report["bleu"] = {**{k: modes[0][k] for k in ("sentence_bleu1", "corpus_bleu1", "corpus_bleu4",
                                                      "sentence_bleu1_std")},
                          "repeats": modes[0]["repeats"],
                          "what": f"{modes[0]['what']} (the paper's mode); BLEU-1 with brevity penalty per "
                                  "sentence, averaged over sentences (the paper's); corpus BLEU-1 and BLEU-4"}
        report["bleu_modes"] = modes
        timing["bleu"] = time.perf_counter() - t0
    report["timing_s"] = timing
    report["per_sentence"] = per
    return report


def _num(x, fmt=".3f"):
    return "n/a" if x is None else format(x, fmt) if abs(x) < 1e6 else format(x, ".3g")


BOUND_ORDER = ("melbo", "elbo", "elbo_single", "iwae", "heldout", "elbo_single_train_prior", "iwae_train_prior",
               "heldout_train_prior", "truth")


def format_report(rep: dict) -> str:
    """Human-readable lines; every number names its bound, prior, samples and convention."""
    L = [f"sentences {rep['sentences']}, tokens {rep['tokens_words_eos']} (words + one <eos> each)"]
    if rep.get("precision", "fp32") != "fp32":
        L.append(f"WARNING: {rep['precision_what']}")
    if rep.get("language_model"):
        b = rep["exact"]
        L.append(f"GRU language model (no latent): exact NLL {b['nll_per_sentence']:.3f} nats/sentence; "
                 f"PPL {_num(b['ppl_words_eos'])} [words+<eos>], {_num(b['ppl_paper'])} [paper convention]")
        if "truth" in rep:
            t = rep["truth"]["nll_per_sentence"]
            L.append(f"true NLL (the generating HMM): {t:.3f} nats/sentence; model - truth "
                     f"{b['nll_per_sentence'] - t:+.3f}")
        return "\n".join(L)
    r = rep["reconstruction"]
    zw = "z=mean (AE)" if "AE" in r.get("what", "") else "z~q(z|x)"
    L.append(f"reconstruction -log p(x|z), {zw}: {r['nll_per_sentence']:.3f} nats/sentence "
             f"(at z=mean: {r['nll_per_sentence_at_mean_z']:.3f}); "
             f"PPL {r['ppl_words_eos']:.3f} [words+<eos>], {r['ppl_paper']:.3f} [paper convention]")
    L.append(f"KL(q(z|x)||N(0,I)): {rep['kl']['mean']:.3f} nats/sentence")
    m = rep["melbo"]
    L.append(f"MELBO NLL bound (eqn 16, test-set aggregate-posterior prior, log N = {m['log_N']:.3f}, "
             f"N_z = {m['n_z']}, R = {m['repeats']}): {m['nll_per_sentence']:.3f} "
             f"({m['nll_per_sentence_std']:.3f}) nats/sentence; PPL {m['ppl_words_eos']:.3f} [words+<eos>], "
             f"{m['ppl_paper']:.3f} ({m['ppl_paper_std']:.3f}) [paper convention]")
    truth = rep.get("truth")
    L.append("NLL upper bounds, nats/sentence; PPL = exp(sum NLL / tokens) [words+<eos>] and [paper convention] "
             "(n/a: an importance-weighted bound does not split off the <eos> terms):")
    head = f"  {'bound':<22} {'prior':<58} {'samples':<42} {'NLL':>9} {'PPL[w+eos]':>11} {'PPL[paper]':>11}"
    L.append(head + (f" {'true NLL gap':>12}" if truth else ""))
    for key in BOUND_ORDER:
        if key not in rep:
            continue
        b = rep[key]
        line = (f"  {b['bound']:<22} {b['prior']:<58} {b['samples']:<42} {b['nll_per_sentence']:>9.3f} "
                f"{_num(b['ppl_words_eos']):>11} {_num(b['ppl_paper']):>11}")
        if truth is not None:
            line += f" {b['nll_per_sentence'] - truth['nll_per_sentence']:>+12.3f}"
        L.append(line)
    for key in ("heldout", "heldout_train_prior"):
        if key in rep:
            L += format_heldout(rep[key])
    if "latent" in rep:
        a = rep["latent"]
        L.append(f"latent ({a['dim']}-d): MI estimate I(x;z) {a['mutual_information']:.3f} nats (<= log N); "
                 f"active units {a['active_units']}/{a['dim']} (Var_x E_q[z_u] > 0.01); kNN entropy (k=3, max-norm) "
                 f"of z~q {a['entropy_z']['entropy']:.2f}, of means {a['entropy_mu']['entropy']:.2f}, "
                 f"N(0,I) {a['entropy_std_normal']:.2f} nats")
    if "bleu" in rep:
        for b in rep.get("bleu_modes", [dict(rep["bleu"], what="greedy reconstructions from z~q(z|x)")]):
            sd = f" (std {b['sentence_bleu1_std']:.4f})" if b.get("repeats", 1) > 1 else ""
            L.append(f"BLEU, {b['what']}: sentence BLEU-1 (paper's, averaged) {b['sentence_bleu1']:.4f}{sd}; "
                     f"corpus BLEU-1 {b['corpus_bleu1']:.4f}; corpus BLEU-4 {b['corpus_bleu4']:.4f}")
    return "\n".join(L)


# `smim evaluate --quick`: about a minute on PTB test with a 512-d model on 2 CPU threads
QUICK = {"max_sentences": 100, "repeats": 2, "iwae_k": 10,
         "heldout": {"heldout_methods": "q,gauss,components", "heldout_valid": 10,
                     "widen_factors": "100", "fixed_stds": "0.3", "component_candidates": 10}}


def quick_note(args, heldout: HeldoutConfig) -> str:
    """What --quick left out, for the log and the report."""
    return (f"--quick: {args.max_sentences or 'all'} sentences (subset, seed 0), {args.repeats} MELBO repeats, "
            f"K={args.iwae_k} samples, held-out methods {heldout.heldout_methods} chosen on {heldout.heldout_valid} "
            f"validation sentences (no prior-only, defensive or fitted proposals, no AIS), no BLEU; drop --quick for the full "
            "evaluation")


def resolve_device(name: str) -> torch.device:
    """--device: cpu, cuda, cuda:N or auto; a missing GPU is the user's error, not a traceback."""
    from .errors import UserError
    from .runtime import pick_device
    try:
        device = pick_device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: no CUDA GPU is available here (use cpu or auto)")
    return device


def eval_extras(model, vocab, ds, corpus, train_ds, iwae_k, agg_prior_m, seed, batch_size=100, device="cpu") -> dict:
    """The keyword arguments of `evaluate` that need more than the test split: the IWAE
    sample count, the training-set aggregate prior and, on corpus synthetic, the true NLL."""
    prior = None
    if iwae_k and agg_prior_m and train_ds is not None and model.has_latent:
        prior = bounds.training_prior(model, train_ds, agg_prior_m, seed, batch_size, device)
    truth = synthetic_truth(ds, vocab) if corpus == "synthetic" else None
    return {"iwae_k": iwae_k, "train_prior": prior, "true_nll": truth}
