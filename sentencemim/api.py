"""The latent space as a tool: encode sentences, decode codes, reconstruct,
sample, interpolate, search for neighbours. Strings in, strings out; codes are
numpy arrays (N, d) and anything array-like (tensor or numpy) is accepted back.

    from sentencemim import SentenceMIM
    m = SentenceMIM.from_pretrained("runs/ptb-mim512")      # run dir, model dir or checkpoint
    mean, std = m.encode(["there was no panic"])            # (1, 512) each
    m.reconstruct(["there was no panic"], mode="perturb")   # z ~ N(mu, (10 sigma)^2)
    m.sample(5, std=0.1, seed=0)                            # z ~ N(0, 0.1^2 I)
    m.interpolate("there was no panic", "the company did n't break out its results")

Tokenisation policy: a sentence is split on whitespace and nothing else (the
corpora here are pre-tokenised, e.g. PTB: lowercase, `N` for numbers, `n't` split
off). With `lowercase=True` tokens are lowercased first. Words missing from the
vocabulary become <unk> and are reported through `on_oov` (default: a Python
warning of class OOVWarning). An empty sentence is a UserError.

Randomness (sampled codes, sampled decoding) comes from one torch.Generator per
call seeded with `seed`; seed=None draws from torch's global RNG instead.
"""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .data import collate, iter_lines
from .decoding import decode as decode_ids
from .errors import UserError
from .model import SentenceAE
from .progress import Progress
from .vocab import Vocab

RECONSTRUCT_MODES = ("mean", "sample", "perturb")


class OOVWarning(UserWarning):
    """Out-of-vocabulary words were replaced by <unk>."""


def _warn_oov(message: str) -> None:
    warnings.warn(message, OOVWarning, stacklevel=4)


def oov_message(words: Counter, limit: int = 10) -> str:
    shown = ", ".join(w for w, _ in words.most_common(limit))
    more = f" (+{len(words) - limit} more)" if len(words) > limit else ""
    return f"{sum(words.values())} out-of-vocabulary word(s) mapped to <unk>: {shown}{more}"


def iter_nonempty_lines(path: str | Path, stats: dict | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 file, lazily. The same
    policy as data.read_sentences: BOM and CRLF tolerated, invalid UTF-8 is an error.
    stats["lines"] counts every line read, blank ones included."""
    for lineno, line in iter_lines(path):
        if stats is not None:
            stats["lines"] = lineno
        if line.strip():
            yield lineno, line.strip()


class SentenceMIM:
    """A trained sentence auto-encoder (sMIM, sVAE or AE) with its vocabulary."""

    def __init__(self, model: SentenceAE, vocab: Vocab, info: dict | None = None, lowercase: bool = False,
                 batch_size: int = 100, on_oov: Callable[[str], None] | None = _warn_oov):
        if model.cfg.vocab_size != len(vocab):
            raise UserError(f"model vocabulary size {model.cfg.vocab_size} != {len(vocab)} words in vocab")
        self.model = model.eval()
        self.vocab = vocab
        self.info = info or {}
        self.lowercase = lowercase
        self.batch_size = batch_size
        self.on_oov = on_oov

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | Path, which: str = "best", device="cpu", *, revision: str | None = None,
                        token: str | None = None, cache_dir: str | Path | None = None, **kwargs) -> "SentenceMIM":
        """Load a model directory (config.json + model.safetensors + vocab.json), a
        training run directory (checkpoint-`which`.pt), a checkpoint file, or a Hugging
        Face Hub repo id `owner/name` (extra `hub`; revision, token and cache_dir as in
        huggingface_hub.snapshot_download; HF_HUB_OFFLINE=1 reads the cache only).
        device: "cpu", "cuda", "cuda:1", ... or "auto" (a GPU when there is one)."""
        from .hub import resolve
        from .modelio import load_model
        from .runtime import pick_device
        path = resolve(path, revision, token, cache_dir)
        model, vocab, info = load_model(path, which, pick_device(str(device)))
        return cls(model, vocab, info, **kwargs)

    def save_pretrained(self, directory: str | Path, *, repo_id: str | None = None, push_to_hub: bool = False,
                        **push_to_hub_kwargs) -> Path:
        """Write config.json + model.safetensors + vocab.json, and a model card
        (README.md) when the directory has none. With push_to_hub, upload the directory
        to `repo_id` (default: the directory's name), as huggingface_hub's
        ModelHubMixin.save_pretrained does; push_to_hub_kwargs go to `push_to_hub`."""
        from .modelcard import write_model_card
        from .modelio import save_pretrained
        extra = {k: v for k, v in self.info.items() if k != "checkpoint"}
        if "checkpoint" in self.info:
            extra["exported_from"] = self.info["checkpoint"]
        out = save_pretrained(self.model, self.vocab, directory, extra)
        if not (out / "README.md").exists():
            write_model_card(out, repo_id=repo_id)
        if push_to_hub:
            from .hub import push
            push(out, repo_id or Path(out).resolve().name, **push_to_hub_kwargs)
        return out

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload sentencemim model",
                    private: bool | None = None, token: str | None = None, branch: str | None = None,
                    create_pr: bool | None = None):
        """Save into a temporary directory (with a model card) and upload it to the
        Hugging Face Hub repo `repo_id` (created if missing). Returns huggingface_hub's
        CommitInfo."""
        import tempfile

        from .hub import push
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / repo_id.split("/")[-1], repo_id=repo_id)
            return push(folder, repo_id, commit_message, private, token, branch, create_pr)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def latent_dim(self) -> int:
        return self.model.cfg.latent_dim

    @property
    def objective(self) -> str | None:
        return self.info.get("train", {}).get("objective")

    # ------------------------------------------------------------------ text <-> ids
    def tokenize(self, sentence: str) -> list[str]:
        if not isinstance(sentence, str):
            raise UserError(f"expected a sentence as a string, got {type(sentence).__name__}")
        tokens = (sentence.lower() if self.lowercase else sentence).split()
        if not tokens:
            raise UserError(f"empty sentence {sentence!r}: nothing to encode")
        return tokens

    def to_ids(self, sentences: Iterable[str]) -> list[np.ndarray]:
        """Token ids (no specials) per sentence; OOV words are reported once per call."""
        seqs, oov = [], Counter()
        for s in sentences:
            tokens = self.tokenize(s)
            oov.update(t for t in tokens if t not in self.vocab.stoi)
            seqs.append(np.asarray(self.vocab.encode(tokens), dtype=np.int64))
        if oov and self.on_oov is not None:
            self.on_oov(oov_message(oov))
        return seqs

    def to_text(self, ids: list[int]) -> str:
        return " ".join(self.vocab.decode(ids))

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def _encode_ids(self, seqs: list[np.ndarray], batch_size: int | None = None,
                    bar: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, d), in the order of `seqs`. Batches are sorted by
        length (little padding) and scattered back through Batch.index."""
        N, d, bs = len(seqs), self.latent_dim, batch_size or self.batch_size
        mu = torch.empty(N, d, device=self.device)
        logvar = torch.empty(N, d, device=self.device)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        for start in range(0, N, bs):
            idx = order[start:start + bs]
            b = collate([seqs[i] for i in idx], idx, self.vocab.pad_id, self.vocab.sos_id,
                        self.vocab.eos_id).to(self.device)
            m, lv = self.model.encode(b.enc_in, b.lengths)  # (b, d) each
            mu[b.index], logvar[b.index] = m, lv
            if bar is not None:
                bar.update(len(idx))
        return mu, logvar

    def encode(self, sentences: str | Iterable[str], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior q(z|x) = N(mean, diag std^2) per sentence: (mean, std), float32 (N, d).
        A single string counts as a list of one sentence."""
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        mu, logvar = self._encode_ids(self.to_ids(sentences), batch_size)
        return mu.cpu().numpy(), torch.exp(0.5 * logvar).cpu().numpy()

    def encode_file(self, path: str | Path, output: str | Path | None = None,
                    std_output: str | Path | None = None, batch_size: int | None = None,
                    chunk_size: int = 10000, progress: bool = False) -> dict:
        """Encode every non-blank line of a text file (row i = i-th non-blank line),
        streaming `chunk_size` lines at a time. With `output`, the means go to a .npy
        file (and the stds to `std_output`), written row block by row block through a
        temporary file renamed at the end, so the codes never have to fit in memory, a
        full disk is a one-line error (a memory map would die of SIGBUS there) and no
        partial file is left; without, they are returned under "mean" and "std".
        Also returns counts: lines, sentences, empty (blank lines skipped), oov."""
        n = sum(1 for _ in iter_nonempty_lines(path))  # pass 1: the row count for the .npy header
        if n == 0:
            raise UserError(f"{path}: no non-blank lines to encode")
        shape, writers = (n, self.latent_dim), []
        if output is None:
            mean, std = np.empty(shape, np.float32), np.empty(shape, np.float32)
        else:
            mean = _NpyWriter(output, shape)
            writers.append(mean)
            std = None
            if std_output:
                std = _NpyWriter(std_output, shape)
                writers.append(std)
        report = {"path": str(path), "lines": 0, "sentences": n, "oov": Counter()}
        bar = Progress(n, "encode", enabled=progress)
        row, chunk = 0, []
        try:
            for _, text in iter_nonempty_lines(path, report):
                chunk.append(text)
                if len(chunk) == chunk_size:
                    row = self._encode_chunk(chunk, row, mean, std, report["oov"], batch_size, bar)
                    chunk = []
            if chunk:
                row = self._encode_chunk(chunk, row, mean, std, report["oov"], batch_size, bar)
            if row != n:
                raise UserError(f"{path}: changed while being encoded ({n} lines counted, {row} read)")
            for w in writers:
                w.finish()  # atomic: a killed run never leaves a half-written .npy
        except BaseException:
            for w in writers:
                w.abort()
            raise
        finally:
            bar.close()
        report["empty"] = report["lines"] - n
        if report["oov"] and self.on_oov is not None:
            self.on_oov(oov_message(report["oov"]))
        if output is None:
            report["mean"], report["std"] = mean, std
        return report

    def _encode_chunk(self, chunk, row, mean, std, oov: Counter, batch_size, bar) -> int:
        """Encode a list of lines into rows row.. of the mean/std arrays; next free row."""
        seqs = []
        for s in chunk:
            tokens = self.tokenize(s)
            oov.update(t for t in tokens if t not in self.vocab.stoi)
            seqs.append(np.asarray(self.vocab.encode(tokens), dtype=np.int64))
        mu, logvar = self._encode_ids(seqs, batch_size, bar)  # (n, d) each
        mean[row:row + len(seqs)] = mu.cpu().numpy()  # a _NpyWriter takes the rows in order
        if std is not None:
            std[row:row + len(seqs)] = torch.exp(0.5 * logvar).cpu().numpy()
        return row + len(seqs)


    # ------------------------------------------------------------------ decode
    def _as_codes(self, z) -> torch.Tensor:
        z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z)
        if z.dim() == 1:
            z = z.unsqueeze(0)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UserError(f"latent codes must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return z.to(self.device, torch.float32)

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))

    def _randn(self, shape, gen) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=self.device)

    def decode(self, z, method: str = "greedy", max_len: int = 100, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, beam_size: int = 5, length_penalty: float = 0.0,
               ban_unk: bool = False, seed: int | None = None, batch_size: int | None = None,
               generator: torch.Generator | None = None) -> list[str]:
        """Sentences from codes z (N, d) or (d,): greedy, sample (temperature, top-k,
        top-p) or beam search; ban_unk never emits <unk>; at most max_len tokens.
        `generator` (on the model's device) replaces `seed` when given."""
        z = self._as_codes(z)
        self._check_decoding(method, max_len, temperature, top_k, top_p, beam_size, length_penalty)
        gen = generator if generator is not None else self._generator(seed)
        ban = (self.vocab.unk_id,) if ban_unk else ()
        bs = batch_size or self.batch_size
        out = []
        for start in range(0, z.shape[0], bs):
            ids = decode_ids(self.model, z[start:start + bs], max_len, method, temperature, top_k, top_p,
                             ban, gen, beam_size, length_penalty)
            out += [self.to_text(s) for s in ids]
        return out

    @staticmethod
    def _check_decoding(method, max_len, temperature, top_k, top_p, beam_size, length_penalty=0.0):
        from .decoding import METHODS
        if method not in METHODS:
            raise UserError(f"unknown decoding method {method!r}; choose one of {', '.join(METHODS)}")
        if max_len < 1 or beam_size < 1 or top_k < 0:
            raise UserError("max_len and beam_size must be >= 1, top_k >= 0")
        if not (0 < temperature < math.inf) or not 0 < top_p <= 1:
            raise UserError(f"temperature must be a finite number > 0 and top_p in (0, 1], got {temperature}, {top_p}")
        if not math.isfinite(length_penalty):
            raise UserError(f"length_penalty must be a finite number, got {length_penalty}")

    # ------------------------------------------------------------------ the paper's probes (sec. 4.7)
    def codes(self, sentences, mode: str = "mean", scale: float = 10.0,
              seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent codes (N, d) of sentences: the posterior mean, a sample z ~ q(z|x),
        or a perturbed sample z ~ N(mu, (scale * sigma)^2)."""
        if mode not in RECONSTRUCT_MODES:
            raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(RECONSTRUCT_MODES)}")
        if mode == "perturb" and not (0 <= scale < math.inf):
            raise UserError(f"scale must be a finite number >= 0, got {scale}")
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        mu, logvar = self._encode_ids(self.to_ids(sentences))
        if mode == "mean":
            return mu
        gen = generator if generator is not None else self._generator(seed)
        std = torch.exp(0.5 * logvar) * (scale if mode == "perturb" else 1.0)
        return mu + std * self._randn(mu.shape, gen)

    def reconstruct(self, sentences, mode: str = "mean", scale: float = 10.0, seed: int | None = None,
                    **decode_kwargs) -> list[str]:
        """Decode each sentence from its mean code (M), a posterior sample (R) or a
        perturbed sample with `scale` times the posterior std (P; paper: 10)."""
        gen = self._generator(seed)
        z = self.codes(sentences, mode, scale, generator=gen)
        return self.decode(z, generator=gen, **decode_kwargs)

    def sample(self, n: int, std: float = 0.1, seed: int | None = None, **decode_kwargs) -> list[str]:
        """n sentences from z ~ N(0, std^2 I) (the paper uses std 0.1 for sMIM)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise UserError(f"the number of samples must be a positive integer, got {n!r}")
        if not (0 <= std < math.inf):
            raise UserError(f"std must be a finite number >= 0, got {std}")
        gen = self._generator(seed)
        z = std * self._randn((int(n), self.latent_dim), gen)
        return self.decode(z, generator=gen, **decode_kwargs)

    def interpolate(self, a: str, b: str, steps: int = 10, codes: str = "sample", seed: int | None = None,
                    **decode_kwargs) -> list[str]:
        """Decode `steps` equispaced points z_a + t (z_b - z_a), t = 0 .. 1, between
        codes of a and b: sampled z ~ q(z|x) (the paper's) or the means (codes='mean')."""
        if codes not in ("sample", "mean"):
            raise UserError(f"codes must be 'sample' or 'mean', got {codes!r}")
        if not isinstance(steps, (int, np.integer)) or steps < 2:
            raise UserError(f"steps must be an integer >= 2 (both ends included), got {steps!r}")
        gen = self._generator(seed)
        z = self.codes([a, b], codes, generator=gen)  # (2, d)
        t = torch.linspace(0, 1, int(steps), device=self.device).unsqueeze(1)  # (steps, 1)
        return self.decode(z[0] + t * (z[1] - z[0]), generator=gen, **decode_kwargs)

    # ------------------------------------------------------------------ search
    def neighbors(self, queries, index_codes, k: int = 5, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
        """Nearest index rows to each query's mean code: (rows (Q, k), distances (Q, k)),
        closest first. index_codes: (N, d) means, e.g. from encode or encode_file."""
        q = torch.as_tensor(self.encode(queries)[0])
        return nearest(q, index_codes, k, metric)


def nearest(query, index, k: int = 5, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest rows of index (N, d) for each row of query (Q, d).
    metric 'l2' (Euclidean) or 'cosine' (1 - cosine similarity). Ties: lower row first."""
    q = torch.as_tensor(np.asarray(query), dtype=torch.float64)
    x = torch.as_tensor(np.asarray(index), dtype=torch.float64)
    if q.dim() != 2 or x.dim() != 2 or q.shape[1] != x.shape[1]:
        raise UserError(f"query codes {tuple(q.shape)} and index codes {tuple(x.shape)} do not match")
    if k < 1:
        raise UserError(f"k must be a positive integer, got {k}")
    if metric == "l2":
        dist = torch.cdist(q, x)  # (Q, N)
    elif metric == "cosine":
        dist = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    else:
        raise UserError(f"unknown metric {metric!r}; choose l2 or cosine")
    k = min(k, x.shape[0])
    # a stable sort keeps equal distances in index order (topk does not promise that)
    d, i = torch.sort(dist, dim=1, stable=True)
    return i[:, :k].numpy(), d[:, :k].numpy()


class _NpyWriter:
    """A float32 .npy of a known shape written in row order: header, then row blocks
    (`writer[a:b] = rows`), into .NAME.tmp, renamed to NAME by finish(). Errors while
    writing (a full disk) are one-line UserErrors and remove the temporary file."""

    def __init__(self, out, shape):
        out = Path(out).resolve() if Path(out).is_symlink() else Path(out)  # a link: its target is replaced
        if not out.parent.is_dir():
            raise UserError(f"{out.parent}: output folder does not exist")
        if out.exists() and not out.is_file():
            raise UserError(f"{out}: not a regular file; name a .npy file to write")
        self.out, self.shape, self.rows, self.f = out, shape, 0, None
        self.tmp = out.with_name(f".{out.name}.tmp")
        self._io(self._open)

    def _open(self):
        self.f = open(self.tmp, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": "<f4", "fortran_order": False, "shape": self.shape})

    def _io(self, fn):
        try:
            fn()
        except OSError as e:
            self.abort()
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UserError(f"{self.out}: {'no space left on device' if full else e.strerror or e} "
                            "while writing the codes; no partial file was left") from None

    def __setitem__(self, rows: slice, block: np.ndarray) -> None:
        if rows.start != self.rows:
            raise ValueError("rows must be written in order")
        block = np.ascontiguousarray(block, dtype="<f4")
        self._io(lambda: self.f.write(block.tobytes()))
        self.rows += block.shape[0]

    def finish(self) -> None:
        def done():
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.tmp.replace(self.out)
        self._io(done)

    def abort(self) -> None:
        if self.f is not None and not self.f.closed:
            try:
                self.f.close()
            except OSError:
                pass
        self.tmp.unlink(missing_ok=True)


def load_index(m, index: str | Path, codes: str | Path | None = None, progress: bool = True,
               purpose: str = "index"):
    """(sentences, posterior means (N, d) float32) of the non-blank lines of `index` for model
    `m`; the means come from a `smim encode` .npy when `codes` is given (its shape checked),
    else they are encoded now. `purpose` words the error for an empty file."""
    lines = [text for _, text in iter_nonempty_lines(index)]
    if not lines:
        raise UserError(f"{index}: no non-blank lines to {purpose}")
    if codes:
        try:
            means = np.load(codes, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{codes}: not a readable .npy file ({e})") from None
        if means.shape != (len(lines), m.latent_dim):
            raise UserError(f"{codes}: shape {means.shape} does not match {len(lines)} non-blank lines of {index} "
                            f"x latent size {m.latent_dim}; re-run smim encode on that file")
    else:
        means = m.encode_file(index, progress=progress)["mean"]
    return lines, np.asarray(means, dtype=np.float32)
