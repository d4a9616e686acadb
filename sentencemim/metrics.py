"""Text metrics: the paper's sentence BLEU-1 (with brevity penalty) and corpus
BLEU-n, written out so the definitions are visible; tests/test_metrics.py checks them
against nltk."""

from __future__ import annotations

import math
from collections import Counter


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu1(reference: list[str], hypothesis: list[str]) -> float:
    """Unigram BLEU of one sentence: brevity penalty x clipped unigram precision
    (nltk's sentence_bleu with weights=(1.0,), no smoothing)."""
    c, r = len(hypothesis), len(reference)
    if c == 0:
        return 0.0
    ref = Counter(reference)
    matches = sum(min(k, ref[w]) for w, k in Counter(hypothesis).items())
    if matches == 0:
        return 0.0
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * matches / c


def corpus_bleu(references: list[list[str]], hypotheses: list[list[str]], max_n: int = 4) -> float:
    """Corpus BLEU-n with uniform weights (Papineni et al.): clipped n-gram counts
    summed over the corpus, one brevity penalty from total lengths. A hypothesis
    shorter than n adds no n-grams (as in sacrebleu; nltk counts max(1, #n-grams),
    so the two differ only when some hypothesis is shorter than n)."""
    matches, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for ref, hyp in zip(references, hypotheses):
        c += len(hyp)
        r += len(ref)
        for n in range(1, max_n + 1):
            h, rf = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(k, rf[g]) for g, k in h.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if c == 0 or min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_p)


def bleu_scores(references: list[list[str]], hypotheses: list[list[str]]) -> dict:
    """The three BLEU numbers reported for reconstructions: the paper's sentence BLEU-1
    averaged over sentences, and corpus BLEU-1 / BLEU-4 (which weigh long sentences more)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    per = [sentence_bleu1(r, h) for r, h in zip(references, hypotheses)]
    return {"sentence_bleu1": sum(per) / max(len(per), 1),
            "corpus_bleu1": corpus_bleu(references, hypotheses, 1),
            "corpus_bleu4": corpus_bleu(references, hypotheses, 4)}
