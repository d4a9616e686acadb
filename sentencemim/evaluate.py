"""Evaluation: per-sentence terms kept in dataset order, aggregated once.

Bounds on the negative log-likelihood of a test set D of N sentences (nats):

  MELBO (paper eqn 16):  NLL_hat = -(1/N) sum_i (1/N_z) sum_j log p(x_i|z_ij) + log N,  z_ij ~ q(z|x_i)
      The prior is the test set's own aggregated posterior (hence log N). Repeated R
      times for a mean and std, as in the paper. Not a held-out likelihood.
  ELBO (eqn 11):         -log p(x) <= E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)), one z sample.

Perplexity = exp(sum of sentence NLLs / number of tokens), two conventions:
  words+<eos>   <eos> in numerator and denominator (what peers report; the default)
  paper         numerator without the <eos> terms, denominator with one <eos> per
                sentence (the authors' code; only for comparing with the paper's tables)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data import Dataset
from .decoding import decode
from .metrics import corpus_bleu, sentence_bleu1
from .model import SentenceAE, kl_std_normal
from .progress import Progress
from .vocab import Vocab


@torch.no_grad()
def sentence_terms(model: SentenceAE, ds: Dataset, n_z: int = 1, batch_size: int = 100,
                   seed: int = 0, device="cpu", progress: bool = False) -> dict:
    """Per-sentence arrays in dataset order: rec (mean over n_z samples z ~ q of
    -log p(x|z)), rec_eos (its <eos> part), rec_mean (at z = mu), kl (analytic),
    tokens (words + 1). Seeded; the global RNG is left untouched."""
    model.eval()
    N = len(ds)
    res = {k: np.zeros(N) for k in ("rec", "rec_eos", "rec_mean", "rec_mean_eos", "kl")}
    res["tokens"] = np.zeros(N, dtype=np.int64)
    batches = ds.eval_batches(batch_size)
    bar = Progress(len(batches), "evaluate", enabled=progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for idx in batches:
            b = ds.batch(idx).to(device)
            mu, logvar = model.encode(b.enc_in, b.lengths)
            rec_m, eos_m = model.token_nll(b.dec_in, b.dec_tgt, b.lengths, mu)
            rec = torch.zeros_like(rec_m)
            eos = torch.zeros_like(rec_m)
            for _ in range(n_z):
                r, e = model.token_nll(b.dec_in, b.dec_tgt, b.lengths, model.reparameterize(mu, logvar))
                rec += r / n_z
                eos += e / n_z
            i = b.index.numpy()
            for k, v in (("rec", rec), ("rec_eos", eos), ("rec_mean", rec_m), ("rec_mean_eos", eos_m),
                         ("kl", kl_std_normal(mu, logvar))):
                res[k][i] = v.double().cpu().numpy()
            res["tokens"][i] = b.lengths.cpu().numpy()
            bar.update()
    bar.close()
    return res


def perplexities(nll_sum: float, eos_sum: float, tokens: int) -> dict:
    return {"ppl_words_eos": math.exp(nll_sum / tokens),
            "ppl_paper": math.exp((nll_sum - eos_sum) / tokens)}


def melbo(rec: np.ndarray, rec_eos: np.ndarray, tokens: np.ndarray) -> dict:
    """Eqn 16 from per-sentence reconstruction terms."""
    N = len(rec)
    nll = rec.mean() + math.log(N)
    return {"nll_per_sentence": nll, "log_N": math.log(N),
            **perplexities(N * nll, rec_eos.sum(), int(tokens.sum()))}


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


def evaluate(model: SentenceAE, ds: Dataset, vocab: Vocab, n_z: int = 1, repeats: int = 10,
             seed: int = 0, batch_size: int = 100, bleu: bool = True, device="cpu",
             progress: bool = False) -> dict:
    """The first-evaluation report (see module docstring); all NLLs in nats."""
    N = len(ds)
    runs = [sentence_terms(model, ds, n_z, batch_size, seed + r, device, progress and r == 0)
            for r in range(repeats)]
    first = runs[0]
    tokens = first["tokens"]
    T = int(tokens.sum())
    mel = [melbo(r["rec"], r["rec_eos"], tokens) for r in runs]
    rec_sum = first["rec"].sum()
    elbo_nll = first["rec"] + first["kl"]  # single-sample reconstruction + analytic KL
    report = {
        "sentences": N, "tokens_words_eos": T, "words": T - N,
        "reconstruction": {
            "what": "-log p(x|z) per sentence, z ~ q(z|x), words + <eos>, nats",
            "nll_per_sentence": rec_sum / N,
            "nll_per_sentence_at_mean_z": first["rec_mean"].sum() / N,
            **perplexities(rec_sum, first["rec_eos"].sum(), T),
        },
        "kl": {"what": "KL(q(z|x) || N(0,I)) per sentence, analytic, nats", "mean": first["kl"].mean()},
        "melbo": {
            "what": f"MELBO upper bound on NLL, eqn 16: prior = test-set aggregated posterior, "
                    f"N_z = {n_z} z sample(s) per sentence, mean (std) over R = {repeats} repeats",
            "n_z": n_z, "repeats": repeats, "log_N": math.log(N),
            **{k: float(np.mean([m[k] for m in mel])) for k in ("nll_per_sentence", "ppl_words_eos", "ppl_paper")},
            **{k + "_std": float(np.std([m[k] for m in mel])) for k in ("nll_per_sentence", "ppl_words_eos", "ppl_paper")},
        },
        "elbo": {
            "what": "negative ELBO upper bound on NLL: prior N(0,I), 1 z sample for the "
                    "reconstruction term, analytic KL",
            "nll_per_sentence": elbo_nll.mean(),
            **perplexities(elbo_nll.sum(), first["rec_eos"].sum(), T),
        },
        "conventions": {
            "ppl_words_eos": "exp(sum NLL / (words + <eos>)); <eos> in numerator and denominator",
            "ppl_paper": "exp((sum NLL - <eos> terms) / (words + <eos>)); the paper's convention",
        },
    }
    if bleu:
        refs = [vocab.decode(s.tolist()) for s in ds.seqs]
        hyps = reconstructions(model, ds, vocab, "sample", "greedy", batch_size, seed, device)
        report["bleu"] = {
            "what": "reconstructions decoded greedily from z ~ q(z|x); BLEU-1 with brevity penalty "
                    "per sentence, averaged over sentences (the paper's); corpus BLEU-1 and BLEU-4",
            "sentence_bleu1": float(np.mean([sentence_bleu1(r, h) for r, h in zip(refs, hyps)])),
            "corpus_bleu1": corpus_bleu(refs, hyps, 1),
            "corpus_bleu4": corpus_bleu(refs, hyps, 4),
        }
    return report


def format_report(rep: dict) -> str:
    """Human-readable lines; every number names its bound, prior, samples and convention."""
    L = [f"sentences {rep['sentences']}, tokens {rep['tokens_words_eos']} (words + one <eos> each)"]
    r = rep["reconstruction"]
    L.append(f"reconstruction -log p(x|z), z~q(z|x): {r['nll_per_sentence']:.3f} nats/sentence "
             f"(at z=mean: {r['nll_per_sentence_at_mean_z']:.3f}); "
             f"PPL {r['ppl_words_eos']:.3f} [words+<eos>], {r['ppl_paper']:.3f} [paper convention]")
    L.append(f"KL(q(z|x)||N(0,I)): {rep['kl']['mean']:.3f} nats/sentence")
    m = rep["melbo"]
    L.append(f"MELBO NLL bound (eqn 16, test-set aggregate-posterior prior, log N = {m['log_N']:.3f}, "
             f"N_z = {m['n_z']}, R = {m['repeats']}): {m['nll_per_sentence']:.3f} "
             f"({m['nll_per_sentence_std']:.3f}) nats/sentence; PPL {m['ppl_words_eos']:.3f} [words+<eos>], "
             f"{m['ppl_paper']:.3f} ({m['ppl_paper_std']:.3f}) [paper convention]")
    e = rep["elbo"]
    L.append(f"ELBO NLL bound (prior N(0,I), 1 z sample + analytic KL): {e['nll_per_sentence']:.3f} "
             f"nats/sentence; PPL {e['ppl_words_eos']:.3f} [words+<eos>], {e['ppl_paper']:.3f} [paper convention]")
    if "bleu" in rep:
        b = rep["bleu"]
        L.append(f"BLEU of greedy reconstructions from z~q(z|x): sentence BLEU-1 (paper's, averaged) "
                 f"{b['sentence_bleu1']:.4f}; corpus BLEU-1 {b['corpus_bleu1']:.4f}; corpus BLEU-4 {b['corpus_bleu4']:.4f}")
    return "\n".join(L)
