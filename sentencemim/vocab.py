"""Word vocabulary with fixed ids for the special tokens.

    id 0 <pad>   id 1 <unk>   id 2 <sos>   id 3 <eos>   then words by falling count

A corpus's own unknown-word token (`<unk>` in PTB, `_UNK` in Yahoo/Yelp) is not a
word of its own: it maps to the <unk> id, and decodes as `<unk>`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from .errors import UserError

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
SPECIALS = (PAD, UNK, SOS, EOS)
UNK_ALIASES = ("<unk>", "_UNK", "<UNK>")


class Vocab:
    pad_id, unk_id, sos_id, eos_id = 0, 1, 2, 3

    def __init__(self, words: Iterable[str], unk_aliases: Iterable[str] = UNK_ALIASES):
        self.unk_aliases = tuple(unk_aliases)
        self.itos = list(SPECIALS)
        for w in words:
            if w in SPECIALS or w in self.unk_aliases:
                continue
            self.itos.append(w)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise UserError("vocabulary has duplicate words")
        for alias in self.unk_aliases:
            self.stoi[alias] = self.unk_id

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_count: int = 1, max_size: int = 0,
              unk_aliases: Iterable[str] = UNK_ALIASES) -> "Vocab":
        """Words seen at least `min_count` times, most frequent first (ties by first
        appearance), at most `max_size` words besides the specials (0 = no cap)."""
        counts = Counter(w for s in sentences for w in s)
        aliases = set(unk_aliases)
        words = [w for w, c in counts.most_common() if c >= min_count and w not in aliases
                 and w not in SPECIALS]
        if max_size:
            words = words[:max_size]
        return cls(words, unk_aliases)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.unk_id
        return [self.stoi.get(t, unk) for t in tokens]

    def count_oov(self, tokens: list[str]) -> int:
        """Tokens that are not in the vocabulary (the corpus's own unk token is not OOV)."""
        return sum(1 for t in tokens if t not in self.stoi)

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Ids to words; with `strip`, stop at <eos> and leave out <pad>/<sos>."""
        out = []
        for i in ids:
            i = int(i)
            if strip and i == self.eos_id:
                break
            if strip and i in (self.pad_id, self.sos_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def to_json(self) -> dict:
        return {"format": "sentencemim-vocab-1", "itos": self.itos, "unk_aliases": list(self.unk_aliases)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_json(cls, data: dict, source: str = "vocab") -> "Vocab":
        if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
            raise UserError(f"{source}: not a sentencemim vocabulary (expected an 'itos' word list)")
        itos = data["itos"]
        aliases = data.get("unk_aliases", UNK_ALIASES)
        if not all(isinstance(w, str) for w in itos) or not isinstance(aliases, (list, tuple)) \
                or not all(isinstance(w, str) for w in aliases):
            raise UserError(f"{source}: 'itos' and 'unk_aliases' must be lists of strings")
        if tuple(itos[:4]) != SPECIALS:
            raise UserError(f"{source}: vocabulary must start with {', '.join(SPECIALS)}")
        try:
            return cls(itos[4:], aliases)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: vocabulary file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json(data, str(path))
