"""Answer-selection data: loaders, tokenisation, filtering (paper sec. 4.6).

Every loader returns a list of `Question`s: a question's tokens and its candidate
answers, each with a 0/1 label, in file order. Candidates of one question must be
contiguous in the files (they are in WikiQA and TrecQA); a question string that
reappears later after another question starts a new `Question` (TrecQA has a few
repeated texts that belong to different question ids).

Formats read:

  * WikiQA Sent (and the plain form everything else reads):
        question<TAB>answer<TAB>label          no header; label 0 or 1
  * TrecQA (brmson/dataset-sts anssel/wang): CSV with header `qtext,label,atext`
  * YahooCQA (Tay et al. 2017, vanzytay/YahooQA_Splits): a *pickled* dict
        {"train"|"dev"|"test": {question: [[answer, label], ...]}}
    Unpickling runs code from the file, so it needs `allow_pickle=True` and prints a
    warning; `convert_yahoocqa` writes the plain TSV form once, for everything else.

Tokenisation. The QA text must look like the pre-training corpus (WikiText-2:
tokenized, case kept). All three sets are already tokenized, so we split on
whitespace and keep case; `normalize` additionally undoes PTB bracket/quote escapes
(TrecQA's -LRB-, ``, '') and WikiText's @-@ @,@ @.@ joiners, so that e.g.
"year-round" and "1,000" are spelled the same in corpus and QA text.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .data import iter_lines
from .errors import UserError

QUESTION_MARK = "?"
_PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
        "``": '"', "''": '"', "-lrb-": "(", "-rrb-": ")"}
_WIKITEXT_JOINERS = (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")


def normalize(text: str) -> list[str]:
    """Whitespace tokens with PTB escapes and WikiText joiners undone; case kept."""
    text = f" {text} "
    for joiner, char in _WIKITEXT_JOINERS:
        text = text.replace(joiner, char)
    return [_PTB.get(t, t) for t in text.split()]


_PTB_KEEP = frozenset("$ & ' #".split())  # the symbols Mikolov's PTB keeps
_PTB_NUMBER = re.compile(r"[+-]?[\d.,:/-]*\d[\d.,:/%-]*")
_PUNCT = re.compile(r"[^\w]+")


def ptb_text(tokens: list[str]) -> list[str]:
    """Tokens as Mikolov's PTB writes them, for a model trained on it: lowercase, numbers as
    `N`, punctuation dropped (PTB has none but $ & ' #)."""
    out = []
    for t in tokens:
        t = t.lower()
        if _PTB_NUMBER.fullmatch(t):
            out.append("N")
        elif t in _PTB_KEEP or not _PUNCT.fullmatch(t):
            out.append(t)
    return out


def qa_tokens(question: list[str], answer: list[str]) -> list[str]:
    """Q + "?" + A (paper sec. 4.6). The "?" is added only when the question does not
    already end with one, so "how old is X ?" and "how old is X" give the same
    sequence (WikiQA train questions end in "?", test questions mostly do not)."""
    q = list(question)
    if not q or q[-1] != QUESTION_MARK:
        q.append(QUESTION_MARK)
    return q + list(answer)


@dataclass
class Question:
    text: list[str]
    answers: list[list[str]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    source: str = ""  # "file:line" of the first candidate, for messages

    @property
    def n_correct(self) -> int:
        return sum(1 for x in self.labels if x > 0)


FILTERS = ("both", "correct", "none")


def filter_questions(questions: list[Question], mode: str = "both") -> list[Question]:
    """The standard evaluation filters. "both" (default; TrecQA 'clean'): keep questions
    with at least one correct and at least one wrong candidate. "correct" (the WikiQA
    paper's 243 test questions): at least one correct. "none": keep all; a question
    with no correct candidate then scores 0 on every metric."""
    if mode == "both":
        return [q for q in questions if 0 < q.n_correct < len(q.labels)]
    if mode == "correct":
        return [q for q in questions if q.n_correct > 0]
    if mode == "none":
        return list(questions)
    raise UserError(f"unknown filter {mode!r}; choose one of {', '.join(FILTERS)}")


def _label(value: str, where: str) -> int:
    v = value.strip()
    if v not in ("0", "1"):
        raise UserError(f"{where}: label must be 0 or 1, got {value!r}")
    return int(v)


def _group(rows, source: str) -> list[Question]:
    """rows: (question str, answer str, label int, line) in file order."""
    out: list[Question] = []
    for q, a, label, line in rows:
        qt, at = normalize(q), normalize(a)
        if not qt:
            raise UserError(f"{source}:{line}: empty question")
        if not at:
            raise UserError(f"{source}:{line}: empty answer")
        if not out or out[-1].text != qt:
            out.append(Question(qt, source=f"{source}:{line}"))
        out[-1].answers.append(at)
        out[-1].labels.append(label)
    if not out:
        raise UserError(f"{source}: no question-answer rows")
    return out


def _lines(path: Path):
    """(line number, text without its line ending), by the project's reading policy."""
    for lineno, line in iter_lines(path):
        yield lineno, line.rstrip("\r\n")


def read_tsv(path) -> list[Question]:
    """question<TAB>answer<TAB>label, one candidate a line, no header (WikiQA Sent)."""
    path = Path(path)

    def rows():
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                raise UserError(f"{path}:{lineno}: expected 3 tab-separated columns "
                                f"(question, answer, label), found {len(cols)}")
            yield cols[0], cols[1], _label(cols[2], f"{path}:{lineno}"), lineno
    return _group(rows(), str(path))


def read_trecqa_csv(path) -> list[Question]:
    """TrecQA as CSV with the header qtext,label,atext (quoted, tokenized)."""
    path = Path(path)
    text = "\n".join(line for _, line in _lines(path))
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != ["qtext", "label", "atext"]:
        raise UserError(f"{path}:1: expected the header 'qtext,label,atext', found {header!r}")

    def rows():
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 3:
                raise UserError(f"{path}:{line}: expected 3 CSV fields (qtext, label, atext), found {len(row)}")
            yield row[0], row[2], _label(row[1], f"{path}:{line}"), line
    return _group(rows(), str(path))


# ----------------------------------------------------------------------------- YahooCQA

YAHOOCQA_SPLITS = ("train", "dev", "test")


def read_yahoocqa_pickle(path, allow_pickle: bool = False) -> dict[str, list[Question]]:
    """The published YahooCQA pickle (env.pkl). Needs allow_pickle=True."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if not allow_pickle:
        raise UserError(f"{path}: YahooCQA is published only as a pickle, and unpickling runs code "
                        "from the file; add --allow-pickle (allow_pickle=True in Python) for a file you "
                        "trust. `smim qa convert-yahoocqa env.pkl DIR --allow-pickle` does it once and "
                        "writes plain TSV files that later runs read without it")
    print(f"warning: unpickling {path} (runs code from the file; only for files you trust)", file=sys.stderr)
    import pickle
    try:
        with open(path, "rb") as f:
            env = pickle.load(f)
    except Exception as e:  # any unpickling failure is a bad file
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(env, dict) or not set(YAHOOCQA_SPLITS) <= set(env):
        keys = sorted(env) if isinstance(env, dict) else type(env).__name__
        raise UserError(f"{path}: expected a dict with keys train, dev, test; found {keys}")
    out = {}
    for split in YAHOOCQA_SPLITS:
        if not isinstance(env[split], dict):
            raise UserError(f"{path}: [{split!r}] must map question -> [[answer, label], ...]")
        rows = []
        for i, (q, cands) in enumerate(env[split].items()):
            where = f"{path}: [{split!r}] question {i} ({str(q)[:40]!r})"
            if not isinstance(q, str) or not isinstance(cands, (list, tuple)):
                raise UserError(f"{where}: expected a str key and a list of [answer, label] pairs")
            for j, pair in enumerate(cands):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise UserError(f"{where}, candidate {j}: expected [answer (str), label (0/1)], got {pair!r:.60}")
                rows.append((q, pair[0], _label(str(pair[1]), f"{where}, candidate {j}"), i))
        out[split] = _group_unique(rows, f"{path}[{split}]")
    return out


def _group_unique(rows, source):
    """Like _group, but each dict key is its own question even if texts collide after
    normalisation; `line` is the question index."""
    out: dict[int, Question] = {}
    for q, a, label, i in rows:
        qt, at = normalize(q), normalize(a)
        if not qt or not at:
            raise UserError(f"{source}: question {i}: empty question or answer")
        out.setdefault(i, Question(qt, source=f"{source}: question {i}"))
        out[i].answers.append(at)
        out[i].labels.append(label)
    if not out:
        raise UserError(f"{source}: no question-answer pairs")
    return list(out.values())


def write_tsv(questions: list[Question], path) -> None:
    """The plain form: question<TAB>answer<TAB>label (tokens joined by spaces)."""
    with open(path, "w", encoding="utf-8") as f:
        for q in questions:
            for a, label in zip(q.answers, q.labels):
                f.write(f"{' '.join(q.text)}\t{' '.join(a)}\t{label}\n")


def convert_yahoocqa(pickle_path, out_dir, allow_pickle: bool = False) -> list[Path]:
    """env.pkl -> out_dir/{train,dev,test}.tsv (read by `load_questions`)."""
    splits = read_yahoocqa_pickle(pickle_path, allow_pickle)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, qs in splits.items():
        write_tsv(qs, out_dir / f"{split}.tsv")
        paths.append(out_dir / f"{split}.tsv")
    (out_dir / "README.json").write_text(json.dumps(
        {"source": str(pickle_path), "format": "question<TAB>answer<TAB>label",
         "questions": {s: len(q) for s, q in splits.items()}}, indent=2))
    return paths


# ----------------------------------------------------------------------------- names

NAMED = ("wikiqa", "trecqa", "yahoocqa")
_SPLIT_ALIASES = {"valid": "dev", "dev": "dev", "test": "test", "train": "train"}


def dataset_path(name: str, split: str, data_dir: Path) -> Path:
    """The file of a named data set inside the data directory."""
    split = _SPLIT_ALIASES.get(split)
    if split is None:
        raise UserError("split must be train, dev (valid) or test")
    if name == "wikiqa":
        return data_dir / "wikiqa" / f"WikiQASent-{split}.txt"
    if name == "trecqa":
        return data_dir / "trecqa" / f"{split}.csv"
    if name == "yahoocqa":
        return data_dir / "yahoocqa" / f"{split}.tsv"
    raise UserError(f"unknown QA data set {name!r}; choose {', '.join(NAMED)} or give a file path")


def load_questions(data: str, split: str = "test", data_dir=None, allow_pickle: bool = False,
                   filter: str = "both") -> list[Question]:
    """A named data set (wikiqa, trecqa, yahoocqa) or a file: .csv is TrecQA form,
    .pkl the YahooCQA pickle, anything else question<TAB>answer<TAB>label; then
    `filter_questions(.., filter)`."""
    from .corpora import data_dir as resolve_data_dir
    path = Path(data)
    if data in NAMED:
        path = dataset_path(data, split, resolve_data_dir(data_dir))
        if data == "yahoocqa" and not path.is_file():
            raise UserError(f"{path}: missing. YahooCQA is published as a pickle (vanzytay/YahooQA_Splits "
                            f"data/env.pkl); convert it with `smim qa convert-yahoocqa env.pkl "
                            f"{path.parent} --allow-pickle`")
        if not path.is_file():
            raise UserError(f"{path}: missing; point --data-dir (or $SENTENCEMIM_DATA) at a folder holding "
                            f"{path.parent.name}/{path.name}")
    if path.suffix == ".pkl":
        split = _SPLIT_ALIASES.get(split, split)
        questions = read_yahoocqa_pickle(path, allow_pickle)[split]
    elif path.suffix == ".csv":
        questions = read_trecqa_csv(path)
    else:
        questions = read_tsv(path)
    return filter_questions(questions, filter)
