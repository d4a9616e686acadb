"""QA ranking metrics (hand-computed), the sec. 4.6 score, and answer generation."""

import itertools
import math

import numpy as np
import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.model import SentenceAE
from sentencemim.qa import (Ranker, answer_from_decoded, average_precision, generate_answers,
                            length_scores, overlap_scores, precision_at_1, random_ranking, rank_metrics,
                            reciprocal_rank, summarize_runs)
from sentencemim.qa_data import Question, qa_tokens
from sentencemim.vocab import Vocab


# ----------------------------------------------------------------------------- metrics

def test_metrics_without_ties_hand_computed():
    # ranking by score: c(1) b(0) a(1) d(0)  -> correct at ranks 1 and 3
    scores, labels = [0.2, 0.5, 0.9, 0.1], [1, 0, 1, 0]
    assert precision_at_1(scores, labels) == 1.0
    assert reciprocal_rank(scores, labels) == 1.0
    assert average_precision(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # correct only at rank 2 and 4
    scores, labels = [4, 3, 2, 1], [0, 1, 0, 1]
    assert precision_at_1(scores, labels) == 0.0
    assert reciprocal_rank(scores, labels) == 0.5
    assert average_precision(scores, labels) == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_metrics_all_tied_are_the_random_expectation():
    # 4 candidates, 1 correct, all tied: the correct one is at rank 1..4 with chance 1/4
    labels = [0, 0, 1, 0]
    assert precision_at_1([0] * 4, labels) == pytest.approx(0.25)
    assert reciprocal_rank([0] * 4, labels) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # 25/48
    assert average_precision([0] * 4, labels) == pytest.approx(25 / 48)
    # 3 tied, 2 correct: orders 110 101 011 (x2 each) -> AP 1, (1 + 2/3)/2, (1/2 + 2/3)/2
    labels = [1, 1, 0]
    assert precision_at_1([5] * 3, labels) == pytest.approx(2 / 3)
    assert reciprocal_rank([5] * 3, labels) == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert average_precision([5] * 3, labels) == pytest.approx((1 + 5 / 6 + 7 / 12) / 3)


def test_metrics_partial_tie_hand_computed():
    # a wrong answer strictly first, then a tie of {correct, wrong}: rank of correct is 2 or 3
    scores, labels = [9, 5, 5], [0, 1, 0]
    assert precision_at_1(scores, labels) == 0.0
    assert reciprocal_rank(scores, labels) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert average_precision(scores, labels) == pytest.approx((1 / 2 + 1 / 3) / 2)


def _brute_force(scores, labels):
    """Average the tie-free metrics over every order of the tied candidates."""
    n = len(scores)
    vals = []
    for perm in itertools.permutations(range(n)):
        # a strict tie-break: position in `perm` decides between equal scores
        key = {i: (scores[i], -perm.index(i)) for i in range(n)}
        order = sorted(range(n), key=lambda i: key[i], reverse=True)
        ranked = [labels[i] for i in order]
        hits = [k + 1 for k, y in enumerate(ranked) if y]
        p1 = float(ranked[0] == 1)
        rr = 1 / hits[0] if hits else 0.0
        ap = np.mean([(j + 1) / h for j, h in enumerate(hits)]) if hits else 0.0
        vals.append((p1, rr, ap))
    return np.mean(vals, axis=0)


@pytest.mark.parametrize("seed", range(8))
def test_tie_expectation_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    scores = rng.integers(0, 3, n).tolist()  # many ties
    labels = rng.integers(0, 2, n).tolist()
    want = _brute_force(scores, labels)
    got = (precision_at_1(scores, labels), reciprocal_rank(scores, labels), average_precision(scores, labels))
    assert np.allclose(got, want)


def test_no_correct_candidate_scores_zero_and_aggregation():
    assert reciprocal_rank([1, 2], [0, 0]) == 0.0 and average_precision([1, 2], [0, 0]) == 0.0
    m = rank_metrics([[2, 1], [1, 2]], [[1, 0], [1, 0]])
    assert m == {"P@1": 0.5, "MRR": 0.75, "MAP": 0.75, "questions": 2}
    s = summarize_runs([{"P@1": 0.5, "MRR": 0.6, "MAP": 0.7, "questions": 3},
                        {"P@1": 0.7, "MRR": 0.6, "MAP": 0.7, "questions": 3}])
    assert s["P@1"] == pytest.approx(0.6) and s["P@1_std"] == pytest.approx(math.sqrt(0.02))
    assert s["MRR_std"] == 0.0 and s["runs"] == 2


# ----------------------------------------------------------------------------- score

WORDS = "what is the capital of france ? paris lyon big river city".split()


@pytest.fixture
def qa_vocab():
    return Vocab(WORDS)


def _toy_model(vocab, right_words, log_std=-6.0):
    """A real SentenceAE whose embedding gives the right answer's words the <unk> row:
    the encoder then cannot tell Q "?" <right answer> from Q "?" <unk>.., so the right
    answer's code equals z^unk and every other answer's code differs."""
    torch.manual_seed(0)
    model = SentenceAE(ModelConfig(vocab_size=len(vocab), embedding_dim=8, hidden_dim=8, latent_dim=3,
                                   logvar_floor=-20))
    with torch.no_grad():
        for w in right_words:
            model.embedding.weight[vocab.stoi[w]] = model.embedding.weight[vocab.unk_id]
        model.to_mu.weight.mul_(20)
        model.to_logvar.weight.zero_()
        model.to_logvar.bias.fill_(2 * log_std)
    return model.eval()


def _question():
    q = Question("what is the capital of france ?".split())
    for a, y in (("lyon city", 0), ("paris city", 1), ("big river", 0), ("lyon", 0)):
        q.answers.append(a.split())
        q.labels.append(y)
    return q


@pytest.mark.parametrize("variant", ["mean", "ae", "sample"])
def test_score_ranks_the_known_right_answer_first(qa_vocab, variant):
    model = _toy_model(qa_vocab, ["paris", "city"])
    ranker = Ranker(model, qa_vocab, [_question()])
    (s,) = ranker.scores(variant, torch.Generator().manual_seed(0))
    assert s.shape == (4,)
    assert int(np.argmin(s)) == 1  # "paris city": same code as Q ? <unk> <unk>
    if variant != "sample":
        assert s[1] == pytest.approx(0.0, abs=1e-5) and (s[[0, 2, 3]] > 1e-3).all()
    m = ranker.evaluate(variant, runs=3)
    assert m["P@1"] == 1.0 and m["MRR"] == 1.0 and m["questions"] == 1


def test_score_formula_matches_hand_computation(qa_vocab):
    ranker = Ranker(_toy_model(qa_vocab, []), qa_vocab, [_question()])
    # overwrite the posteriors with known values for the 4 candidates (d = 3)
    ranker.mu_k = torch.tensor([[1., 0, 0], [0, 0, 0], [0, 2, 0], [3, 0, 0]])
    ranker.mu_u = torch.zeros(4, 3)
    ranker.lv_k = torch.zeros(4, 3)
    ranker.lv_u = torch.log(torch.tensor([[4., 4, 4], [1, 1, 1], [1, 1, 1], [9, 9, 9]]))  # sigma 2,1,1,3
    (mean,) = ranker.scores("mean")
    (ae,) = ranker.scores("ae")
    assert np.allclose(mean, [0.5, 0.0, 2.0, 1.0])
    assert np.allclose(ae, [1.0, 0.0, 2.0, 3.0])
    # sampling: z = mu + eps * sigma with the generator's eps, per candidate
    g = torch.Generator().manual_seed(3)
    eps_k, eps_u = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    want = ((ranker.mu_u + eps_u * ranker.lv_u.mul(0.5).exp() - ranker.mu_k - eps_k)
            / ranker.lv_u.mul(0.5).exp()).norm(dim=-1)
    (got,) = ranker.scores("sample", torch.Generator().manual_seed(3))
    assert np.allclose(got, want.numpy())


def test_unk_count_follows_answer_length(qa_vocab):
    ranker = Ranker(_toy_model(qa_vocab, []), qa_vocab, [_question()])
    # equal-length answers share one Q^unk, so their z^unk means are equal
    assert torch.allclose(ranker.mu_u[0], ranker.mu_u[1]) and torch.allclose(ranker.mu_u[0], ranker.mu_u[2])
    assert not torch.allclose(ranker.mu_u[0], ranker.mu_u[3])
    assert qa_tokens(["q"], ["<unk>"] * 2) == ["q", "?", "<unk>", "<unk>"]
    assert qa_tokens(["q", "?"], ["a"]) == ["q", "?", "a"]


def test_baselines():
    q = _question()
    (s,) = overlap_scores([q], weighted=False)
    assert s.tolist() == [0, 0, 0, 0]  # "capital", "france" never occur in the answers
    q2 = Question("who wrote hamlet".split(), [["shakespeare", "wrote", "hamlet"], ["nobody"]], [1, 0])
    (s,) = overlap_scores([q2], weighted=True)
    assert s[0] > s[1] == 0
    assert length_scores([q])[0].tolist() == [2, 2, 2, 1]
    r = random_ranking([q])  # 1 correct of 4
    assert r["P@1"] == pytest.approx(0.25) and r["MRR"] == pytest.approx(25 / 48)


# ----------------------------------------------------------------------------- generation

def test_answer_is_what_follows_the_first_question_mark():
    assert answer_from_decoded("who is he ? a man ? yes".split()) == "a man ? yes".split()
    assert answer_from_decoded("no question mark".split()) == []
    assert answer_from_decoded("q ? <br> an answer".split()) == ["an", "answer"]
    # a vocabulary without "?": the words after the question's length + 1 tokens
    assert answer_from_decoded("who is he <unk> a man".split(), question_len=3) == ["a", "man"]
    assert answer_from_decoded("who is he ? a man".split(), question_len=3) == ["a", "man"]
    assert answer_from_decoded("who is".split(), question_len=3) == []


def test_generate_answers_bans_unk(qa_vocab):
    model = _toy_model(qa_vocab, [])
    with torch.no_grad():  # make <unk> the decoder's favourite token
        model.out.bias[qa_vocab.unk_id] = 100.0
    out = generate_answers(model, qa_vocab, "what is the capital of france".split(), sample=False)
    assert [o["length"] for o in out] == ["short", "medium", "long"] and [o["unk"] for o in out] == [5, 10, 15]
    for o in out:
        assert "<unk>" not in o["decoded"].split()
        assert set(o["answer"].split()) <= set(o["decoded"].split())
    again = generate_answers(model, qa_vocab, "what is the capital of france".split(), sample=True, seed=1)
    assert len(again) == 3


def test_generate_answers_without_question_mark_in_the_vocabulary():
    vocab = Vocab("what is the capital of france paris city big river lyon".split())
    model = _toy_model(vocab, [])
    out = generate_answers(model, vocab, "what is the capital of france".split(), sample=False)
    for o in out:
        words = o["decoded"].split()
        assert o["answer_by"] == "after the first 7 tokens (no ? in the vocabulary)"
        assert o["answer"].split() == words[7:]
