"""Question answering with a pre-trained model and no fine-tuning (paper sec. 4.6).

Ranking. For question Q and candidate answers A^1..A^K:

    Q^k   = Q "?" A^k                      z^k   ~ q(z | Q^k)
    Q^unk = Q "?" <unk> x |A^k|            z^unk ~ q(z | Q^unk)      (|A^k| = answer tokens)
    S^k   = || (z^unk - z^k) / sigma^unk ||_2      lower is better

Variants (`VARIANTS`):
    sample  the paper's sMIM score: z sampled from both posteriors, divided by sigma^unk
    mean    deterministic: z = posterior means, still divided by sigma^unk
    ae      the paper's AE score: z = posterior means, sigma = 1

The posteriors are computed once (the model is in eval mode: no dropout, no encoder
<unk> replacement); each run only draws new z, independently per candidate.

Metrics (`rank_metrics`), per question, then averaged over questions:
    P@1  the top-ranked candidate is correct
    RR   1 / rank of the first correct candidate          (MRR = mean RR)
    AP   mean over correct candidates of precision at its rank  (MAP = mean AP)
Ties are resolved as the exact expectation over a uniformly random order of the tied
candidates (McSherry & Najork, ECIR 2008), so equal scores neither help nor hurt and
an all-tied ranking gives exactly the random-ranking expectation. A question with no
correct candidate scores 0 on all three (use `filter_questions` to leave them out).
With one correct candidate per question (YahooCQA), P@1 and MRR are the paper's.

Generation (`generate_answers`): z^unk from Q "?" <unk> x n (n = 5/10/15 for
short/medium/long), greedy decoding with <unk> banned; the answer is what follows
the first "?" of the decoded sentence (empty if the model writes no "?").
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import torch

from .data import collate
from .decoding import decode
from .qa_data import QUESTION_MARK, Question, qa_tokens
from .vocab import UNK

VARIANTS = ("sample", "mean", "ae")
LENGTHS = {"short": 5, "medium": 10, "long": 15}


# ----------------------------------------------------------------------------- metrics

def _tie_groups(scores, labels):
    """Yield (r, rc, g, c): items ranked strictly above the group, correct ones among
    them, group size, correct ones in the group; best (highest score) first."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels) > 0
    r = rc = 0
    for value in np.unique(scores)[::-1]:
        members = scores == value
        g, c = int(members.sum()), int(labels[members].sum())
        yield r, rc, g, c
        r, rc = r + g, rc + c


def precision_at_1(scores, labels) -> float:
    """Chance that the top candidate is correct (higher score = better)."""
    _, _, g, c = next(_tie_groups(scores, labels))
    return c / g


def reciprocal_rank(scores, labels) -> float:
    """Expected 1 / rank of the first correct candidate; 0 if none is correct."""
    for r, _, g, c in _tie_groups(scores, labels):
        if c:
            # first correct at position j of the group: P = C(g-j, c-1) / C(g, c)
            total = math.comb(g, c)
            return sum(math.comb(g - j, c - 1) / total / (r + j) for j in range(1, g - c + 2))
    return 0.0


def average_precision(scores, labels) -> float:
    """Expected average precision; 0 if no candidate is correct."""
    n_correct = int((np.asarray(labels) > 0).sum())
    if not n_correct:
        return 0.0
    total = 0.0
    for r, rc, g, c in _tie_groups(scores, labels):
        if not c:
            continue
        for p in range(1, g + 1):
            # position p holds a correct item with chance c/g; given that, the expected
            # number of other correct items above it in the group is (p-1)(c-1)/(g-1)
            above = (p - 1) * (c - 1) / (g - 1) if g > 1 else 0.0
            total += c / g * (rc + 1 + above) / (r + p)
    return total / n_correct


def rank_metrics(score_lists, label_lists) -> dict:
    """P@1, MRR, MAP over questions; scores are higher-is-better."""
    if not score_lists:
        raise ValueError("no questions to score")
    p1 = [precision_at_1(s, y) for s, y in zip(score_lists, label_lists)]
    rr = [reciprocal_rank(s, y) for s, y in zip(score_lists, label_lists)]
    ap = [average_precision(s, y) for s, y in zip(score_lists, label_lists)]
    return {"P@1": float(np.mean(p1)), "MRR": float(np.mean(rr)), "MAP": float(np.mean(ap)),
            "questions": len(p1)}


def summarize_runs(runs: list[dict]) -> dict:
    """Mean and sample std (ddof=1; 0 for one run) of each metric over runs."""
    out = {"runs": len(runs), "questions": runs[0]["questions"]}
    for k in ("P@1", "MRR", "MAP"):
        v = np.array([r[k] for r in runs])
        out[k] = float(v.mean())
        out[k + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


# ----------------------------------------------------------------------------- encoding

@torch.no_grad()
def encode_posteriors(model, vocab, sequences: list[list[str]], batch_size: int = 128):
    """(mu, logvar), each (N, d), in the order of `sequences` (token lists)."""
    model.eval()
    device = next(model.parameters()).device
    ids = [np.asarray(vocab.encode(s), dtype=np.int64) for s in sequences]
    order = np.argsort([len(s) for s in ids], kind="stable")  # little padding per batch
    mu = logvar = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = collate([ids[i] for i in idx], idx, vocab.pad_id, vocab.sos_id, vocab.eos_id).to(device)
        m, lv = model.encode(b.enc_in, b.lengths)
        if mu is None:
            mu = torch.empty(len(ids), m.shape[1], device=device)
            logvar = torch.empty_like(mu)
        mu[b.index], logvar[b.index] = m, lv
    return mu, logvar


class Ranker:
    """Posteriors of every Q^k and Q^unk of a question list, computed once."""

    def __init__(self, model, vocab, questions: list[Question], batch_size: int = 128):
        self.questions = questions
        pairs, unks, self.owner = [], [], []
        for qi, q in enumerate(questions):
            for a in q.answers:
                pairs.append(qa_tokens(q.text, a))
                unks.append(qa_tokens(q.text, [UNK] * len(a)))
                self.owner.append(qi)
        self.owner = np.asarray(self.owner)
        self.mu_k, self.lv_k = encode_posteriors(model, vocab, pairs, batch_size)
        self.mu_u, self.lv_u = encode_posteriors(model, vocab, unks, batch_size)

    def scores(self, variant: str = "sample", generator: torch.Generator | None = None) -> list[np.ndarray]:
        """Per question, the score S^k of each candidate (lower is better)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        z_k, z_u = self.mu_k, self.mu_u
        if variant == "sample":
            eps_k = torch.randn(self.mu_k.shape, generator=generator).to(self.mu_k.device)
            eps_u = torch.randn(self.mu_u.shape, generator=generator).to(self.mu_u.device)
            z_k = self.mu_k + eps_k * torch.exp(0.5 * self.lv_k)
            z_u = self.mu_u + eps_u * torch.exp(0.5 * self.lv_u)
        sigma_u = torch.ones_like(self.mu_u) if variant == "ae" else torch.exp(0.5 * self.lv_u)
        s = ((z_u - z_k) / sigma_u).norm(dim=-1).double().cpu().numpy()  # (N,)
        return [s[self.owner == qi] for qi in range(len(self.questions))]

    def evaluate(self, variant: str = "sample", runs: int = 10, seed: int = 0) -> dict:
        """Metrics averaged over `runs` draws of z (a deterministic variant: one run
        repeated gives std 0, so it is evaluated once)."""
        labels = [q.labels for q in self.questions]
        gen = torch.Generator().manual_seed(seed)
        n = runs if variant == "sample" else 1
        results = [rank_metrics([-s for s in self.scores(variant, gen)], labels) for _ in range(n)]
        out = summarize_runs(results)
        out["runs"] = runs if variant == "sample" else 1
        return out


# ----------------------------------------------------------------------------- baselines

STOPWORDS = frozenset("""a an the of in on at to for from by with about as into and or but is are was were be been
being do does did have has had what which who whom whose when where why how that this these those it its
i you he she we they me him her us them my your his our their there here not no so than too very can will
just ? . , ' 's " ( ) - : ;""".split())


def overlap_scores(questions: list[Question], weighted: bool = True) -> list[np.ndarray]:
    """Word-overlap baseline (Yang et al. 2015 'Word Cnt' / 'Wgt Word Cnt'): the
    non-stopword question words (lower-cased) that occur in the candidate, each counted
    once, weighted by IDF over the candidate sentences of `questions` (no labels used).
    Higher is better."""
    docs = [set(w.lower() for w in a) for q in questions for a in q.answers]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    out = []
    for q in questions:
        qw = {w.lower() for w in q.text} - STOPWORDS
        s = []
        for a in q.answers:
            common = qw & {w.lower() for w in a}
            s.append(sum(math.log(n / df[w]) if weighted else 1.0 for w in common))
        out.append(np.asarray(s))
    return out


def length_scores(questions: list[Question]) -> list[np.ndarray]:
    """Length-only baseline: longer candidates first (answer tokens). It shows how much
    of a score's signal the answer length alone explains."""
    return [np.asarray([len(a) for a in q.answers], dtype=float) for q in questions]


def random_ranking(questions: list[Question]) -> dict:
    """Exact expected metrics of a uniformly random ranking (all scores tied)."""
    return rank_metrics([np.zeros(len(q.labels)) for q in questions], [q.labels for q in questions])


# ----------------------------------------------------------------------------- generation

_HTML = re.compile(r"^<[^>]+>$")


def answer_from_decoded(tokens: list[str], question_len: int | None = None) -> list[str]:
    """The words after the first "?" (HTML-like tags such as <br> removed). With
    `question_len` (for a vocabulary without "?", e.g. PTB's, where Q "?" A is encoded as
    Q <unk> A): the words after the first question_len + 1 decoded tokens instead."""
    if question_len is not None:
        rest = tokens[question_len + 1:]
    elif QUESTION_MARK in tokens:
        rest = tokens[tokens.index(QUESTION_MARK) + 1:]
    else:
        return []
    return [t for t in rest if not _HTML.match(t)]


def has_separator(vocab) -> bool:
    """Whether the vocabulary has the "?" that joins Q and A (PTB's has not)."""
    return QUESTION_MARK in vocab.stoi


NO_SEPARATOR = ('the model\'s vocabulary has no "?" (PTB\'s has none): Q ? A is encoded as Q <unk> A, '
                "and generated answers are the words after the question's length + 1 decoded tokens")


@torch.no_grad()
def generate_answers(model, vocab, question: list[str], lengths=("short", "medium", "long"),
                     sample: bool = True, seed: int = 0, max_len: int = 0) -> list[dict]:
    """One greedy answer per length from z^unk of Q "?" <unk> x n.
    `sample`: z ~ q(z|Q^unk) as in the paper (seeded); otherwise z = its mean."""
    model.eval()
    seqs = [qa_tokens(question, [UNK] * LENGTHS[name]) for name in lengths]
    mu, logvar = encode_posteriors(model, vocab, seqs)
    z = mu
    if sample:
        gen = torch.Generator().manual_seed(seed)
        z = mu + torch.randn(mu.shape, generator=gen).to(mu.device) * torch.exp(0.5 * logvar)
    limit = max_len or max(len(s) for s in seqs) + 30
    by_position = None if has_separator(vocab) else len(seqs[0]) - LENGTHS[lengths[0]] - 1  # Q's length
    out = []
    for name, ids in zip(lengths, decode(model, z, limit, method="greedy", ban=[vocab.unk_id])):
        words = vocab.decode(ids)
        out.append({"length": name, "unk": LENGTHS[name], "decoded": " ".join(words),
                    "answer": " ".join(answer_from_decoded(words, by_position)),
                    "answer_by": "after the first ?" if by_position is None else
                                 f"after the first {by_position + 1} tokens (no ? in the vocabulary)"})
    return out
