"""BLEU against nltk, the independent reference the paper used (Bird 2002)."""

import numpy as np
import pytest

from sentencemim.metrics import bleu_scores, corpus_bleu, sentence_bleu1

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")

WORDS = "the a cat dog sat ran on mat red black".split()


def _random_pairs(n, seed):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        ref = list(rng.choice(WORDS, rng.integers(1, 12)))
        # a noisy copy: some words kept, some replaced, some dropped or added
        hyp = [w if rng.random() < 0.6 else str(rng.choice(WORDS)) for w in ref if rng.random() < 0.9]
        hyp += list(rng.choice(WORDS, rng.integers(0, 3)))
        pairs.append((ref, hyp))
    return pairs


def test_sentence_bleu1_matches_nltk():
    for ref, hyp in _random_pairs(300, 0):
        expect = nltk_bleu.sentence_bleu([ref], hyp, weights=(1.0,)) if hyp else 0.0
        assert sentence_bleu1(ref, hyp) == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_corpus_bleu_matches_nltk(n):
    # nltk counts max(1, #n-grams) per hypothesis, a phantom n-gram for a hypothesis
    # shorter than n; we follow Papineni et al. (and sacrebleu) and count none. Where no
    # hypothesis is that short the two must agree exactly.
    pairs = [(r, h) for r, h in _random_pairs(300, 1) if len(h) >= n]
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    expect = nltk_bleu.corpus_bleu([[r] for r in refs], hyps, weights=(1.0 / n,) * n)
    assert corpus_bleu(refs, hyps, n) == pytest.approx(expect, abs=1e-12)


def test_corpus_bleu_short_hypotheses_papineni_counts():
    refs, hyps = ["a b c d e".split(), "a b".split()], ["a b c d e".split(), "a b".split()]
    # 2 four-grams in total, both matched: precision 1 for n = 1..4 (nltk: 2/3 for n = 4)
    assert corpus_bleu(refs, hyps, 4) == pytest.approx(1.0)


def test_bleu_scores_and_edge_cases():
    refs = ["the cat sat on the mat".split(), "a dog".split()]
    assert bleu_scores(refs, refs) == {"sentence_bleu1": 1.0, "corpus_bleu1": 1.0, "corpus_bleu4": 1.0}
    assert bleu_scores(refs, [["x"], ["y"]])["corpus_bleu1"] == 0.0
    # brevity penalty: a 3-word hypothesis of a 6-word reference
    assert sentence_bleu1(refs[0], "the cat sat".split()) == pytest.approx(np.exp(1 - 6 / 3))
    assert sentence_bleu1(refs[0], []) == 0.0
    with pytest.raises(ValueError, match="hypotheses"):
        bleu_scores(refs, refs[:1])
