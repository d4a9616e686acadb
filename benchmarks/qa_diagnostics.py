"""Why the sampled score behaves as it does: size of the deterministic part of the
score, ||(mu^unk - mu^k) / sigma^unk||, against the noise part, whose norm is about
sqrt(d (1 + sigma_k^2/sigma_unk^2)) (= sqrt(2d) when the two sigmas are equal), and
answer-length effects. Also the token OOV rate of the QA text under the model's vocabulary.

    python benchmarks/qa_diagnostics.py runs/qa-mim --data wikiqa --data-dir /work/shared/data
    python benchmarks/qa_diagnostics.py models/ptb-smim512 --ptb-text   # QA text written as PTB
"""

import argparse
import json

import numpy as np
import torch

from sentencemim.modelio import load_model
from sentencemim.qa import Ranker
from sentencemim.qa_data import load_questions, ptb_text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", default="wikiqa")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--ptb-text", action="store_true", help="questions and answers written as PTB (smim qa --ptb-text)")
    a = ap.parse_args()
    model, vocab, _ = load_model(a.model)
    qs = load_questions(a.data, "test", a.data_dir)
    if a.ptb_text:
        for q in qs:
            q.text, q.answers = ptb_text(q.text), [ptb_text(x) for x in q.answers]
    r = Ranker(model, vocab, qs)
    sig_u, sig_k = torch.exp(0.5 * r.lv_u), torch.exp(0.5 * r.lv_k)
    det = ((r.mu_u - r.mu_k) / sig_u).norm(dim=-1).numpy()
    noise = torch.sqrt((1 + (sig_k / sig_u) ** 2).sum(-1)).numpy()
    raw = (r.mu_u - r.mu_k).norm(dim=-1).numpy()
    lengths = np.array([len(a_) for q in qs for a_ in q.answers])
    tokens = [t for q in qs for x in [q.text] + q.answers for t in x]
    out = {
        "model": a.model, "data": a.data, "ptb_text": a.ptb_text, "candidates": len(det),
        "posterior_std_unk": {"median": float(sig_u.median()), "min": float(sig_u.min()), "max": float(sig_u.max())},
        "mean_score_median": float(np.median(det)), "noise_norm_median": float(np.median(noise)),
        "raw_mu_distance_median": float(np.median(raw)),
        "corr_mean_score_vs_answer_length": float(np.corrcoef(det, lengths)[0, 1]),
        "corr_raw_mu_distance_vs_answer_length": float(np.corrcoef(raw, lengths)[0, 1]),  # the 'ae' score
        "qa_token_oov_rate": sum(vocab.count_oov([t]) for t in tokens) / len(tokens),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
