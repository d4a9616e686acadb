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
  IWAE_K (eval/bounds.py), prior N(0, I) and prior = mixture of the posteriors of M
      *training* sentences. Both are held-out bounds; IWAE_1 is the single-sample ELBO.
  Tightest held-out bound (sentencemim.eval.heldout), both priors: importance sampling
      with better proposals than q (widened q, defensive mixtures, fitted Gaussians,
      reweighted mixture components) and AIS, settings and method chosen on validation
      sentences, each with its ESS and the bound at several K (or AIS steps).

An AE (objective "ae") has a deterministic encoder: its reconstruction, MELBO and BLEU
use z = the posterior mean; its held-out bounds use proposals centred on the mean.

Perplexities (both <eos> conventions), the MELBO and the per-sentence terms: terms.py;
BLEU: bleu.py; the bounds: bounds.py (q-only IWAE), heldout.py (the tightest).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..data import Dataset
from ..entropy import knn_entropy, std_normal_entropy
from ..model import SentenceAE
from ..progress import Progress
from ..vocab import Vocab
from . import bounds
from .bleu import BLEU_MODES, bleu_report
from .heldout import HeldoutConfig, entry_fields, format_heldout, heldout_bounds
from .scoring import Scorer
from .stages import Stages
from .terms import (EOS_CONVENTIONS, PRECISION_WHAT, bound_entry, melbo, perplexities, sentence_terms,
                    synthetic_truth)


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
    exact = bound_entry("exact NLL", "none (language model, no latent)", "exact, no sampling", nll, tokens, eos)
    exact["bound"] = "exact"
    exact["what"] = ("exact -log p(x) of the GRU language model (not a bound); PPL [words+<eos>] and "
                     "[paper convention]")
    rep = {"sentences": N, "tokens_words_eos": T, "words": T - N, "language_model": True,
           "exact": exact, "conventions": dict(EOS_CONVENTIONS), "precision": precision,
           "precision_what": PRECISION_WHAT[precision], "timing_s": {"exact": time.perf_counter() - t0},
           "per_sentence": {"tokens": tokens, "nll": nll, "nll_eos": eos}}
    if true_nll is not None:
        rep["truth"] = {**bound_entry("true NLL", "the generating HMM", "exact (forward algorithm)",
                                      np.asarray(true_nll, dtype=np.float64), tokens), "bound": "exact",
                        "what": "exact -log p(x) under the HMM that generated the corpus"}
        rep["per_sentence"]["true_nll"] = np.asarray(true_nll, dtype=np.float64)
    return rep


def evaluate(model: SentenceAE, ds: Dataset, vocab: Vocab, n_z: int = 1, repeats: int = 10,
             seed: int = 0, batch_size: int = 100, bleu: bool = True, device="cpu",
             progress: bool = False, iwae_k: int = 100, train_prior: bounds.AggregatePrior | None = None,
             true_nll: np.ndarray | None = None, latent: bool = True, max_rows: int = 2048,
             precision: str = "fp32", objective: str | None = None, heldout: HeldoutConfig | None = None,
             valid_ds: Dataset | None = None, valid_what: str = "", bound_sentences: int = 0,
             stages: Stages | None = None) -> dict:
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
    like the MELBO, BLEU and reconstruction.

    `stages` (eval.stages.Stages): the costly stages are kept there as they finish, and an
    evaluation interrupted before the end resumes from them (the reproduce driver's)."""
    if not model.has_latent:
        return evaluate_lm(model, ds, batch_size, device, progress, precision, true_nll)
    N = len(ds)
    st = stages if stages is not None else Stages()
    timing = {}
    det = objective == "ae"  # deterministic encoder: z = mean, every repeat is the same
    melbo_stages = [f"melbo_repeat_{r}" for r in range(1 if det else repeats)]
    runs = [st.run(name, lambda r=r: sentence_terms(
                model, ds, n_z, batch_size, seed + r, device, progress, at_mean=r == 0, precision=precision,
                deterministic=det, desc=f"MELBO repeat {r + 1}/{repeats}"))
            for r, name in enumerate(melbo_stages)]
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
            **bound_entry("MELBO (eqn 16)", "test-set aggregate posterior [uses test data: NOT held-out]",
                          ("z = mean of q (AE)" if det else f"N_z={n_z} per sentence")
                          + f", mean of R={repeats} repeats",
                          first["rec"] + math.log(N), tokens, first["rec_eos"]),
            "n_z": n_z, "repeats": repeats, "log_N": math.log(N),
            **{k: float(np.mean([m[k] for m in mel])) for k in keys},
            **{k + "_std": float(np.std([m[k] for m in mel])) for k in keys},
        },
        "conventions": dict(EOS_CONVENTIONS),
        "precision": precision,
        "precision_what": PRECISION_WHAT[precision],
    }
    timing["melbo_reconstruction"] = st.total(*melbo_stages)  # when computed, also if read back now
    sub_idx = ds.subset_index(bound_sentences, seed) if iwae_k and 0 < bound_sentences < N else None
    if sub_idx is not None:
        bds, btok, sub_note = ds.take(sub_idx), tokens[sub_idx], f"; on {len(sub_idx)} of {N} sentences (seed {seed})"
        sub_info = {"sentences": len(sub_idx), "subset": {"n": len(sub_idx), "of": N, "seed": seed,
                                                          "what": "fixed random subset (Dataset.subset_index)"}}
        rec_r = np.mean([r["rec"] for r in runs], 0)  # E_q over the R MELBO repeats, every sentence
        elbo = rec_r + first["kl"]
        report["elbo"] = {**bound_entry("ELBO", "N(0,I)", f"R={repeats} samples of z ~ q per sentence (the MELBO "
                                        "repeats) for E_q[-log p(x|z)], analytic KL", elbo, tokens,
                                        np.mean([r["rec_eos"] for r in runs], 0)), "sentences": N}
        per.update(elbo=elbo, bound_index=np.asarray(sub_idx))
        report["bound_subset"] = {**sub_info["subset"], "what": (
            f"IWAE and the held-out bounds on {len(sub_idx)} of the {N} sentences (a fixed random subset, seed "
            f"{seed}); the MELBO, ELBO, reconstruction and BLEU on all {N}")}
    else:
        bds, btok, sub_note, sub_info = ds, tokens, "", {}
    if iwae_k:
        w = st.run("iwae", lambda: bounds.importance_weights(
            model, bds, iwae_k, train_prior, batch_size=max(1, min(batch_size, 20)), max_rows=max_rows, seed=seed,
            device=device, progress=progress, precision=precision))
        rec_q, eos_q = w["rec"].mean(1), w["rec_eos"].mean(1)  # E_q over the K samples
        if sub_idx is None:
            elbo = rec_q + w["kl"]
            report["elbo"] = bound_entry("ELBO", "N(0,I)", f"K={iwae_k} for E_q[-log p(x|z)], analytic KL",
                                         elbo, tokens, eos_q)
            per["elbo"] = elbo
        per["rec_q"] = rec_q
        for tag, lp, prior in (("", w["log_p"], "N(0,I)"),
                               ("_train_prior", w.get("log_agg"), train_prior and train_prior.source)):
            if lp is None:
                continue
            single = bounds.single_sample_elbo_nll(w["rec"], w["log_q"], lp)
            iw = bounds.iwae_nll(w["rec"], w["log_q"], lp)
            report["elbo_single" + tag] = {**bound_entry("ELBO (single sample)", prior, "1 sample" + sub_note, single,
                                                         btok), **sub_info}
            report["iwae" + tag] = {**bound_entry(f"IWAE_{iwae_k}", prior, f"K={iwae_k}" + sub_note,
                                                  iw, btok), "k": iwae_k, **sub_info}
            per["elbo_single" + tag], per["iwae" + tag] = single, iw
        if train_prior is not None:
            report["iwae_train_prior"]["m"] = train_prior.m
        timing[f"iwae_k{iwae_k}"] = st.seconds["iwae"]
        if heldout is not None and heldout.method_list() and valid_ds is not None:
            for tag, agg, lp in (("", None, w["log_p"]), ("_train_prior", train_prior, w.get("log_agg"))):
                if lp is None:
                    continue
                res = heldout_bounds(model, bds, valid_ds, agg, heldout, iwae_k, objective, batch_size, max_rows, seed,
                                     device, progress, precision, q_logw=-w["rec"] + lp - w["log_q"],
                                     valid_what=valid_what, stages=st, stage="heldout" + tag)
                if res:
                    m = res["methods"][res["chosen"]]
                    b = bound_entry(f"tightest ({res['chosen']})", res["prior"], m["samples"] + sub_note,
                                    res["per_sentence"], btok)
                    report["heldout" + tag] = {**entry_fields(res, b), **sub_info}
                    per["heldout" + tag] = res["per_sentence"]
                    a = report["heldout" + tag].get("ais_subset")
                    if a and "index" in a:  # positions among the scored sentences -> sentences of ds
                        pos = np.asarray(a.pop("index"))
                        a["index_in_split"] = (pos if sub_idx is None else np.asarray(sub_idx)[pos]).tolist()
                        per[f"ais_subset{tag}_index"] = np.asarray(a["index_in_split"])  # the sentences of:
                        for name, v in res["ais_subset"]["per_method"].items():
                            per[f"ais_subset{tag}_{name}"] = v
                timing["heldout" + tag] = st.total("heldout" + tag, f"heldout{tag}_ais_subset")
    else:
        elbo = first["rec"] + first["kl"]
        report["elbo"] = bound_entry("ELBO", "N(0,I)", f"N_z={n_z} for E_q[-log p(x|z)], analytic KL",
                                     elbo, tokens, first["rec_eos"])
        per["elbo"] = elbo
    if true_nll is not None:
        report["truth"] = {**bound_entry("true NLL", "the generating HMM", "exact (forward algorithm)",
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
        modes = bleu_report(model, ds, vocab, BLEU_MODES, batch_size, seed, device, repeats, progress,
                            deterministic=det, keep=st.run)  # each decoding pass a stage: bleu_Z_DECODING_R
        report["bleu"] = {**{k: modes[0][k] for k in ("sentence_bleu1", "corpus_bleu1", "corpus_bleu4",
                                                      "sentence_bleu1_std")},
                          "repeats": modes[0]["repeats"],
                          "what": f"{modes[0]['what']} (the paper's mode); BLEU-1 with brevity penalty per "
                                  "sentence, averaged over sentences (the paper's); corpus BLEU-1 and BLEU-4"}
        report["bleu_modes"] = modes
        timing["bleu"] = st.total(*[n for n in st.seconds if n.startswith("bleu_")])
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
    from ..errors import UserError
    from ..runtime import pick_device
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
