"""Per-sentence terms and the numbers made from them: the reconstruction and KL terms of
every sentence (kept in dataset order, aggregated once: sum of nats / sum of tokens, never a
mean of batch means), perplexities in both <eos> conventions, the MELBO (paper eqn 16) and its
dependence on the test-set size (Fig. 5), labelled bound entries, and the synthetic corpus's
exact NLL. `evaluate.py` builds the report from these.

Perplexity = exp(sum of sentence NLLs / number of tokens), two conventions:
  words+<eos>   <eos> in numerator and denominator (what peers report; the default)
  paper         numerator without the <eos> terms, denominator with one <eos> per
                sentence (the authors' code; only for comparing with the paper's tables).
                Only defined where the bound splits into token terms (MELBO, ELBO with
                analytic KL); an importance-weighted log-mean-exp does not split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import Dataset
from ..model import SentenceAE, kl_std_normal
from ..progress import Progress
from ..vocab import Vocab
from .scoring import Scorer

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


def _what(key: str) -> str:
    if key in PER_SENTENCE_WHAT:
        return PER_SENTENCE_WHAT[key]
    if key.startswith("ais_subset"):  # ais_subset[_train_prior]_index / _METHOD (heldout's ais_sentences)
        if key.endswith("_index"):
            return "indices (dataset order) of the sentences of the ais_subset arrays: AIS's fixed random subset"
        method = key[len("ais_subset"):].removeprefix("_train_prior").lstrip("_")
        return (f"AIS bound (method {method}, at its largest step count) on the sentences of the matching "
                "ais_subset..._index array (not all sentences)")
    return ""


def per_sentence_arrays(per: dict) -> dict:
    """The per-sentence arrays plus their descriptions (`_what`, JSON), ready for np.savez."""
    import json
    return {**per, "_what": np.array(json.dumps({k: _what(k) for k in per}))}


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


def bound_entry(name, prior, samples, per_sentence, tokens, eos=None, std=None) -> dict:
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


def synthetic_truth(ds: Dataset, vocab: Vocab) -> np.ndarray:
    """Exact -log p(x) of each sentence of the built-in synthetic corpus (its HMM)."""
    from ..errors import UserError
    from ..synthetic import true_nll
    if ds.oov:
        raise UserError("the test split has words outside the model's vocabulary; the true NLL of the "
                        "synthetic corpus would not match the model's event space")
    return true_nll([vocab.decode(s.tolist()) for s in ds.seqs])
