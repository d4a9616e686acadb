"""BLEU of reconstructions (paper Table 2's BLEU column and our greedy modes beside it).

The paper's BLEU comes from the authors' code: a reconstruction from z ~ q(z|x) decoded by
sampling at temperature 1, sentence BLEU-1 averaged over sentences (the authors' public demo code). That mode
comes first, with R repeats (mean and std); greedy from z ~ q and from the posterior mean are
ours, labelled. An AE (deterministic encoder) uses z = the posterior mean in every mode.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import Dataset
from ..decoding import decode
from ..metrics import bleu_scores
from ..progress import Progress
from ..vocab import Vocab

# (z mode, decoding method). The first is the paper's: the authors' code reconstructs from
# z ~ q(z|x) by sampling at temperature 1 (the authors' public demo code), so that mode goes beside the
# paper's BLEU, with R repeats; the greedy modes are ours, labelled, decoded once.
BLEU_MODES = (("sample", "sample"), ("sample", "greedy"), ("mean", "greedy"))


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
                repeats: int = 1, progress: bool = False, deterministic: bool = False, keep=None) -> list[dict]:
    """BLEU of reconstructions in each (z mode, decoding) mode. A mode with any randomness
    (z ~ q or sampled decoding) is decoded `repeats` times with seeds seed, seed+1, ...: its
    scores are the mean over repeats, with the std beside them (`*_std`); the first repeat's
    examples are kept. Deterministic modes (z = mean, greedy) are decoded once.
    deterministic (an AE): z = the posterior mean in every mode. keep(name, fn) (an
    eval.stages.Stages' run): each decoding pass is a stage of its own, so an interrupted
    report resumes at the pass it stopped in (each pass has its own seed)."""
    refs = [vocab.decode(s.tolist()) for s in ds.seqs]
    keep = keep or (lambda name, fn: fn())
    out = []
    for z_mode, method in modes:
        z_here = "mean" if deterministic else z_mode
        r_here = repeats if (z_here == "sample" or method == "sample") else 1
        bar = Progress(r_here, f"BLEU ({z_here} z, {method})", enabled=progress)
        scores, first = [], None

        def one_pass(r):
            hyps = reconstructions(model, ds, vocab, z_here, method, batch_size, seed + r, device)
            return bleu_scores(refs, hyps), hyps[:5]
        for r in range(r_here):
            sc, hyps = keep(f"bleu_{z_mode}_{method}_{r}", lambda r=r: one_pass(r))
            scores.append(sc)
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
