"""Text files -> token lists -> id arrays -> length-bucketed batches.

Reading policy (every line is accounted for in `ReadStats`):
  * UTF-8, with or without a byte-order mark; LF, CRLF or CR-only line endings.
  * Anything that is not UTF-8 text is an error naming the file and line: invalid
    UTF-8, a UTF-16/32 byte-order mark, NUL and other control bytes (UTF-16 without
    a BOM, binary files).
  * Empty and whitespace-only lines are skipped and counted (`empty`).
  * With `label_column`, a line `label<TAB>text` keeps only the text (Yelp15).
  * Sentences longer than `max_length` words are dropped or truncated by the
    stated policy and counted (`dropped_long` / `truncated`).

Batch layout for a sentence w1..wn (T = max n + 1 over the batch, right padded):

    enc_in   wn ... w1 <sos> <pad>..    encoder reads the sentence reversed, never <eos>
    dec_in   <sos> w1 ... wn <pad>..    decoder input
    dec_tgt  w1 ... wn <eos> <pad>..    decoder target
    lengths  n + 1                      same for all three rows
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .vocab import Vocab


@dataclass
class ReadStats:
    path: str = ""
    lines: int = 0
    empty: int = 0
    dropped_long: int = 0
    truncated: int = 0
    kept: int = 0
    words: int = 0  # words kept (after truncation), not counting <eos>

    def summary(self) -> str:
        return (f"{self.path}: {self.lines} lines read, {self.kept} kept ({self.words} words), "
                f"{self.empty} empty skipped, {self.dropped_long} dropped as too long, "
                f"{self.truncated} truncated")


_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")  # control bytes that no text file holds (\t \n \v \f \r do)


def iter_lines(path: str | Path):
    """(line number, decoded text) of every line of a UTF-8 text file, lazily.

    Line endings LF, CRLF and CR alone all end a line (a file with old Mac CR-only
    endings is read line by line, never as one long line). A UTF-8 BOM on the first
    line is dropped. Anything else that is not UTF-8 text is an error naming the file
    and line: a UTF-16/32 byte-order mark, a NUL or other control byte (UTF-16 without
    a BOM, binary data), invalid UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as f:
        lineno = 0
        for raw in f:
            if lineno == 0:
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise UserError(f"{path}:1: UTF-16 or UTF-32 text (byte-order mark {raw[:2].hex(' ')}); "
                                    f"expected UTF-8: convert it, e.g. iconv -f UTF-16 -t UTF-8")
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
            body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
            end = raw[len(body):]
            parts = body.split(b"\r")  # a bare CR ends a line too
            if parts[-1] == b"" and len(parts) > 1:  # "text\r" at the end of the file
                parts.pop()
            for i, part in enumerate(parts):
                lineno += 1
                bad = _BINARY.search(part)
                if bad:
                    what = "NUL byte (UTF-16 text without a byte-order mark, or binary data?)" \
                        if part[bad.start()] == 0 else f"control byte 0x{part[bad.start()]:02x} (binary data?)"
                    raise UserError(f"{path}:{lineno}: {what} at byte {bad.start()} of the line; expected UTF-8 text")
                try:
                    text = part.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line") from None
                yield lineno, text + (end.decode() if i == len(parts) - 1 else "\n")


def read_sentences(path: str | Path, max_length: int = 0, length_policy: str = "drop",
                   label_column: bool = False) -> tuple[list[list[str]], ReadStats]:
    """Read one sentence (or document) a line as whitespace tokens."""
    stats = ReadStats(path=str(path))
    sentences: list[list[str]] = []
    for _, line in iter_lines(path):
        stats.lines += 1
        if label_column and "\t" in line:
            line = line.rsplit("\t", 1)[1]
        tokens = line.split()
        if not tokens:
            stats.empty += 1
            continue
        if max_length and len(tokens) > max_length:
            if length_policy == "drop":
                stats.dropped_long += 1
                continue
            tokens = tokens[:max_length]
            stats.truncated += 1
        stats.kept += 1
        stats.words += len(tokens)
        sentences.append(tokens)
    if stats.lines == 0:
        raise UserError(f"{path}: file is empty")
    if stats.kept == 0:
        raise UserError(f"{path}: no sentences left ({stats.summary()})")
    return sentences, stats


def encode_sentences(sentences: list[list[str]], vocab: Vocab) -> list[np.ndarray]:
    return [np.asarray(vocab.encode(s), dtype=np.int64) for s in sentences]


@dataclass
class Batch:
    enc_in: torch.Tensor  # (B, T) reversed sentence + <sos>
    dec_in: torch.Tensor  # (B, T) <sos> + sentence
    dec_tgt: torch.Tensor  # (B, T) sentence + <eos>
    lengths: torch.Tensor  # (B,) words + 1
    index: torch.Tensor  # (B,) position of each sentence in the dataset

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.enc_in, self.dec_in, self.dec_tgt, self.lengths, self.index)))

    @property
    def size(self) -> int:
        return self.lengths.shape[0]


def collate(seqs: list[np.ndarray], index, pad_id=0, sos_id=2, eos_id=3) -> Batch:
    """Build a padded batch from id arrays (no specials)."""
    B = len(seqs)
    n = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=B)
    T = int(n.max()) + 1
    enc = np.full((B, T), pad_id, dtype=np.int64)
    dec_in = np.full((B, T), pad_id, dtype=np.int64)
    dec_tgt = np.full((B, T), pad_id, dtype=np.int64)
    for b, s in enumerate(seqs):
        k = len(s)
        enc[b, :k] = s[::-1]
        enc[b, k] = sos_id
        dec_in[b, 0] = sos_id
        dec_in[b, 1:k + 1] = s
        dec_tgt[b, :k] = s
        dec_tgt[b, k] = eos_id
    return Batch(torch.from_numpy(enc), torch.from_numpy(dec_in), torch.from_numpy(dec_tgt),
                 torch.from_numpy(n + 1), torch.as_tensor(np.asarray(index), dtype=torch.long))


def bucket_batches(lengths, batch_size: int, seed: int, epoch: int, pool: int = 50) -> list[np.ndarray]:
    """Length-bucketed training batches, a new order each epoch, fixed by (seed, epoch).

    Shuffle all indices, cut them into pools of `pool` batches, sort each pool by
    length and cut it into batches (little padding), then shuffle the batch order.
    Every index appears in exactly one batch.
    """
    rng = np.random.default_rng([seed, epoch])
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    batches = []
    step = batch_size * pool
    for start in range(0, len(perm), step):
        chunk = perm[start:start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def sorted_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: sorted by length, fixed order. Results are scattered back
    to dataset order through `Batch.index`."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Dataset:
    """Encoded sentences of one split."""

    def __init__(self, seqs: list[np.ndarray], stats: ReadStats | None = None, oov: int = 0):
        self.seqs = seqs
        self.stats = stats
        self.oov = oov  # tokens mapped to <unk> that were not the corpus's own unk token
        self.lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        """Words + one <eos> per sentence."""
        return int(self.lengths.sum()) + len(self.seqs)

    def batch(self, idx) -> Batch:
        return collate([self.seqs[i] for i in idx], idx)

    def epoch_batches(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        return bucket_batches(self.lengths, batch_size, seed, epoch)

    def eval_batches(self, batch_size: int) -> list[np.ndarray]:
        return sorted_batches(self.lengths, batch_size)

    def subset_index(self, n: int, seed: int = 0) -> np.ndarray:
        """Sorted indices of the first `n` sentences of a fixed random order (all if n is 0 or
        too large). Subsets of one seed are nested: the first 200 lie within the first 500."""
        if not n or n >= len(self):
            return np.arange(len(self))
        return np.sort(np.random.default_rng(seed).permutation(len(self))[:n])

    def take(self, idx) -> "Dataset":
        return Dataset([self.seqs[i] for i in idx], self.stats, self.oov)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """The first `n` sentences of a fixed random order (all if n is 0 or too large)."""
        if not n or n >= len(self):
            return self
        return self.take(self.subset_index(n, seed))


def load_split(path, vocab: Vocab, max_length=0, length_policy="drop", label_column=False) -> Dataset:
    sentences, stats = read_sentences(path, max_length, length_policy, label_column)
    oov = sum(vocab.count_oov(s) for s in sentences)
    return Dataset(encode_sentences(sentences, vocab), stats, oov)
