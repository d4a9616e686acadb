"""Per-question AP differences (paired over questions) between a model's deterministic
score and the random / longest-first baselines: mean difference and its standard error.

    python benchmarks/qa_significance.py runs/qa-mim runs/qa-ae --data-dir /work/shared/data
    python benchmarks/qa_significance.py models/ptb-smim512 --ptb-text   # QA text written as PTB
"""

import argparse

import numpy as np

from sentencemim.modelio import load_model
from sentencemim.qa import Ranker, average_precision, length_scores
from sentencemim.qa_data import load_questions, ptb_text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--ptb-text", action="store_true", help="questions and answers written as PTB (smim qa --ptb-text)")
    a = ap.parse_args()
    for data in ("wikiqa", "trecqa"):
        qs = load_questions(data, "test", a.data_dir)
        if a.ptb_text:
            for q in qs:
                q.text, q.answers = ptb_text(q.text), [ptb_text(x) for x in q.answers]
        rand = np.array([average_precision(np.zeros(len(q.labels)), q.labels) for q in qs])
        longest = np.array([average_precision(s, q.labels) for s, q in zip(length_scores(qs), qs)])
        for path in a.models:
            model, vocab, info = load_model(path)
            variant = "ae" if info.get("train", {}).get("objective") == "ae" else "mean"
            scores = Ranker(model, vocab, qs).scores(variant)
            ap_m = np.array([average_precision(-s, q.labels) for s, q in zip(scores, qs)])
            for name, base in (("random", rand), ("longest-first", longest)):
                d = ap_m - base
                print(f"{data} {path} [{variant}] MAP {ap_m.mean():.4f} - {name} {base.mean():.4f} = "
                      f"{d.mean():+.4f} (paired s.e. {d.std(ddof=1) / np.sqrt(len(d)):.4f}, n={len(d)})")


if __name__ == "__main__":
    main()
