"""The operations of the web app, over one loaded model. Each takes plain values
(already range-checked by app.py's request models), calls the library
(sentencemim.api.SentenceMIM, sentencemim.qa, sentencemim.api.nearest) and returns
a JSON-ready dict whose numbers carry their meaning ("what", "prior", "decoding").

One model serves every request: calls are serialised by a lock (a CPU model runs
one batch at a time anyway, and the shared SentenceMIM is not re-entrant).
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import UserError
from .latentmap import LatentMap

LENGTH_NAMES = ("short", "medium", "long")


class NoIndex(UserError):
    """The server was started without --index (the API answers 404)."""


def describe_decoding(d: dict) -> str:
    if d["method"] == "greedy":
        s = "greedy"
    elif d["method"] == "beam":
        s = f"beam search, beam {d['beam_size']}" + (f", length penalty {d['length_penalty']}"
                                                      if d["length_penalty"] else "")
    else:
        s = f"sampling at temperature {d['temperature']}" + (f", top-k {d['top_k']}" if d["top_k"] else "") \
            + (f", top-p {d['top_p']}" if d["top_p"] < 1 else "")
    return s + (", <unk> banned" if d["ban_unk"] else "") + f", at most {d['max_len']} tokens"


class Service:
    def __init__(self, m, latent_map: LatentMap | None = None, name: str = ""):
        m.on_oov = None  # out-of-vocabulary words are returned with each answer instead
        self.m = m
        self.map = latent_map
        self.name = name
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _oov(self, sentences) -> list[str]:
        seen = []
        for s in sentences:
            for t in self.m.tokenize(s):
                if t not in self.m.vocab.stoi and t not in seen:
                    seen.append(t)
        return seen

    def _row(self, text: str) -> dict:
        return {"text": text, "length": len(text.split())}

    def info(self) -> dict:
        m = self.m
        cfg = m.model.cfg
        return {"model": self.name, "objective": m.objective, "latent_dim": m.latent_dim,
                "vocab_size": len(m.vocab), "embedding_dim": cfg.embedding_dim, "hidden_dim": cfg.hidden_dim,
                "step": m.info.get("step"), "corpus": m.info.get("train", {}).get("corpus"),
                "lowercase": m.lowercase,
                "index": None if self.map is None else {"sentences": len(self.map.sentences),
                                                        "shown": len(self.map.shown), "projection": self.map.method,
                                                        "what": self.map.what},
                "tokenisation": "whitespace; words outside the vocabulary become <unk> (listed as oov)"}

    # ------------------------------------------------------------------ operations
    def reconstruct(self, sentences: list[str], mode: str, scale: float, seed: int, decoding: dict) -> dict:
        with self.lock:
            oov = self._oov(sentences)
            outs = self.m.reconstruct(sentences, mode, scale, seed=seed, **decoding)
        what = {"mean": "z = posterior mean (M)", "sample": "z ~ q(z|x) (R)",
                "perturb": f"z ~ N(mu, ({scale:g} sigma)^2) (P)"}[mode]
        rows = [{"input": " ".join(self.m.tokenize(s)), **self._row(o)} for s, o in zip(sentences, outs)]
        return {"rows": rows, "z": what, "decoding": describe_decoding(decoding), "seed": seed, "oov": oov}

    def interpolate(self, a: str, b: str, steps: int, codes: str, seed: int, decoding: dict) -> dict:
        with self.lock:
            oov = self._oov([a, b])
            outs = self.m.interpolate(a, b, steps, codes, seed=seed, **decoding)
        path = [{"t": i / (steps - 1), **self._row(o)} for i, o in enumerate(outs)]
        what = ("z_a + t (z_b - z_a) between " + ("the posterior means" if codes == "mean"
                                                  else "codes sampled from q(z|a) and q(z|b)"))
        return {"steps": path, "z": what, "decoding": describe_decoding(decoding), "seed": seed, "oov": oov,
                "a": " ".join(self.m.tokenize(a)), "b": " ".join(self.m.tokenize(b))}

    def sample(self, n: int, std: float, seed: int, decoding: dict) -> dict:
        with self.lock:
            outs = self.m.sample(n, std, seed=seed, **decoding)
        return {"samples": [self._row(o) for o in outs], "prior": f"z ~ N(0, {std:g}^2 I)",
                "decoding": describe_decoding(decoding), "seed": seed}

    def qa_answer(self, question: str, lengths: list[str], sample: bool, seed: int, max_len: int) -> dict:
        from ..qa import LENGTHS, generate_answers
        with self.lock:
            oov = self._oov([question])
            tokens = self.m.tokenize(question)
            answers = generate_answers(self.m.model, self.m.vocab, tokens, lengths, sample, seed, max_len)
        return {"question": " ".join(tokens), "answers": answers, "oov": oov, "seed": seed,
                "z": ("z ~ q(z | Q ? <unk> x n)" if sample else "z = mean of q(z | Q ? <unk> x n)"),
                "decoding": f"greedy, <unk> banned; n = {', '.join(f'{k} {LENGTHS[k]}' for k in lengths)}; "
                            "the answer is what follows the first '?'"}

    def qa_rank(self, question: str, answers: list[str], variant: str, seed: int) -> dict:
        import torch

        from ..qa import Ranker
        from ..qa_data import Question
        with self.lock:
            oov = self._oov([question] + answers)
            q = Question(self.m.tokenize(question), [self.m.tokenize(a) for a in answers], [0] * len(answers))
            ranker = Ranker(self.m.model, self.m.vocab, [q])
            scores = ranker.scores(variant, torch.Generator().manual_seed(seed))[0]
        order = np.argsort(scores, kind="stable")
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(1, len(order) + 1)
        rows = [{"answer": " ".join(a), "score": float(s), "rank": int(r)}
                for a, s, r in zip(q.answers, scores, rank)]
        what = {"sample": "z^k ~ q(z|Q ? A^k), z^unk ~ q(z|Q ? <unk> x |A^k|), divided by sigma^unk (the paper's)",
                "mean": "posterior means, divided by sigma^unk", "ae": "posterior means, sigma = 1 (the paper's AE)"}
        return {"question": " ".join(q.text), "candidates": rows, "oov": oov, "seed": seed, "variant": variant,
                "score": "S^k = ||(z^unk - z^k) / sigma^unk||, lower is better; " + what[variant]}

    def neighbors(self, text: str, k: int, metric: str) -> dict:
        from ..api import nearest
        lm = self._need_map()
        with self.lock:
            oov = self._oov([text])
            q = self.m.encode([text])[0]  # (1, d) posterior mean
        rows, dist = nearest(q, lm.codes, k, metric)
        pos = lm.position()
        out = [{"rank": i + 1, "distance": float(d), "sentence": lm.sentences[r], "row": int(r),
                "point": pos.get(int(r))} for i, (r, d) in enumerate(zip(rows[0], dist[0]))]
        xy = lm.project(q)[0]
        return {"query": " ".join(self.m.tokenize(text)), "neighbors": out, "oov": oov, "query_xy": xy.tolist(),
                "distance": {"l2": "Euclidean distance between posterior means",
                             "cosine": "1 - cosine similarity of posterior means"}[metric]}

    def latent_map(self) -> dict:
        lm = self._need_map()
        return {"what": lm.what, "projection": lm.method, "explained": lm.explained,
                "points": [{"x": float(x), "y": float(y), "sentence": lm.sentences[r], "row": int(r)}
                           for (x, y), r in zip(lm.xy, lm.shown)]}

    def _need_map(self) -> LatentMap:
        if self.map is None:
            raise NoIndex("no index loaded: start the server with smim serve MODEL --index FILE")
        return self.map
