"""The built-in `synthetic` corpus: sentences from a small hidden Markov model.

Its exact sentence probabilities are known (the forward algorithm), so the test
set's true negative log-likelihood can be printed beside every bound. It needs
no download: the files are generated deterministically on first use.

The HMM: 6 hidden "word classes", 8 words each (48 words). A sentence starts in a
state drawn from `start`, emits a word, then moves to another state or ends with
the state's `stop` probability. p(x) = sum over state paths, so every sentence
of length >= 1 has a probability and they sum to one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SYNTHETIC_NAME = "synthetic"
SIZES = {"train": 10_000, "valid": 1_000, "test": 1_000}
_SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ro", "sa", "ti", "vo", "ze", "bu", "da"]


class HMM:
    def __init__(self, n_states: int = 6, words_per_state: int = 8, seed: int = 1234):
        rng = np.random.default_rng(seed)
        S = n_states
        self.words = [_SYLLABLES[s * 2 % 12] + _SYLLABLES[(s * 5 + w) % 12] + str(s)
                      for s in range(S) for w in range(words_per_state)]
        V = len(self.words)
        self.start = rng.dirichlet(np.full(S, 0.5))
        self.trans = rng.dirichlet(np.full(S, 0.3), size=S)  # next state, given continue
        self.stop = np.linspace(0.05, 0.35, S)  # p(end | state)
        emit = np.zeros((S, V))
        for s in range(S):  # each state mostly emits its own 8 words
            emit[s] = rng.dirichlet(np.full(V, 0.05))
            emit[s, s * words_per_state:(s + 1) * words_per_state] += rng.dirichlet(np.ones(words_per_state)) * 4
            emit[s] /= emit[s].sum()
        self.emit = emit
        self.index = {w: i for i, w in enumerate(self.words)}

    def sample(self, n: int, rng: np.random.Generator) -> list[list[str]]:
        out = []
        S, V = self.emit.shape
        for _ in range(n):
            s = rng.choice(S, p=self.start)
            sent = []
            while True:
                sent.append(self.words[rng.choice(V, p=self.emit[s])])
                if rng.random() < self.stop[s]:
                    break
                s = rng.choice(S, p=self.trans[s])
            out.append(sent)
        return out

    def log_prob(self, sentence: list[str]) -> float:
        """Exact log p(sentence) in nats by the forward algorithm (scaled)."""
        ids = [self.index[w] for w in sentence]
        alpha = self.start * self.emit[:, ids[0]]
        logp = 0.0
        for i in ids[1:]:
            alpha = (alpha * (1 - self.stop)) @ self.trans * self.emit[:, i]
            c = alpha.sum()
            logp += np.log(c)
            alpha = alpha / c
        return float(logp + np.log((alpha * self.stop).sum()))


def ensure_synthetic(folder: Path) -> Path:
    """Write train/valid/test.txt into `folder` unless they are there already."""
    folder = Path(folder)
    if all((folder / f"{s}.txt").is_file() for s in SIZES):
        return folder
    hmm = HMM()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        text = "".join(" ".join(s) + "\n" for s in hmm.sample(n, rng))
        tmp = folder / f".{split}.txt.{os.getpid()}.tmp"  # several ranks may write at once
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / f"{split}.txt")
    return folder


def true_nll(sentences: list[list[str]]) -> np.ndarray:
    """Exact -log p(x) of each sentence under the generating HMM (nats)."""
    hmm = HMM()
    return np.array([-hmm.log_prob(s) for s in sentences])
