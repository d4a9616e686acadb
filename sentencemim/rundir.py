"""A training run directory: one writer, one identity, records that survive a crash.

    .lock                 fcntl.flock'ed by the one process writing the run (released by the
                          kernel when it exits or is killed: a stale file is harmless)
    fingerprints.json     sha256 of the corpus files and of vocab.json; a resume checks them
    metrics.jsonl         read with a torn last line tolerated (a crash during an append)

Runs written before these existed (no lock, no fingerprints) resume as before; their
fingerprints are recorded at the first resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .config import RESUME_CHANGEABLE
from .errors import UserError

LOCK = ".lock"
FINGERPRINTS = "fingerprints.json"
FINGERPRINT_FORMAT = "sentencemim-fingerprints-1"
RUN_FILES = ("config.json", "vocab.json", "metrics.jsonl", "checkpoint-best.pt", FINGERPRINTS)


# ---------------------------------------------------------------------------- writing files
def _disk_full(e: OSError) -> bool:
    import errno
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def check_output_file(path: str | Path | None, flag: str) -> None:
    """Refuse an output file that cannot be written before any work is done: a long
    evaluation should not end in 'cannot write' hours later."""
    if path is None:
        return
    p = Path(path)
    parent = p.parent  # Path("x.json").parent is Path(".")
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file name")
    if not parent.is_dir():
        raise UserError(f"{parent}: output folder does not exist ({flag} {path})")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable")


def write_atomic(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file and a rename: a full disk or a kill never
    leaves it torn, and no temporary file is left behind."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        tmp = path  # a link, a device (/dev/stdout) or a pipe: written through, never replaced
    else:
        tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if tmp != path:
                os.fsync(f.fileno())
        if tmp != path:
            os.replace(tmp, path)
    except OSError as e:
        if tmp != path:
            tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise UserError(f"{path}: no space left on device") from None
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


class Appender:
    """metrics.jsonl, one JSON record a line, flushed after each; a full disk is one line."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        try:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()
        except OSError as e:
            raise UserError(f"{self.path}: no space left on device" if _disk_full(e)
                            else f"{self.path}: cannot write ({e.strerror or e})") from None

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass  # the error was reported by the write that failed


# ---------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive, non-blocking fcntl.flock on OUT/.lock. A second writer gets a one-line
    error naming the holder's pid. The kernel drops the lock when its process ends, however
    it ends, so a SIGKILL leaves no stale lock."""

    def __init__(self, out: Path):
        self.out, self.fd, self.created = Path(out), None, False

    def acquire(self) -> "RunLock":
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a directory")
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: no lock
            return self
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{self.out}: another smim process (pid {holder}) is writing this run directory; "
                            "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        if self.created and {p.name for p in self.out.iterdir()} == {LOCK}:
            os.unlink(self.out / LOCK)  # nothing was written (a mistake found early): leave no folder
            self.out.rmdir()
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = None


def remove_temp_files(out: Path) -> None:
    """Temporary files a killed writer left (.NAME.tmp); called with the lock held."""
    for p in out.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def clear_unfinished(out: Path, log) -> None:
    """A folder whose run stopped before its first checkpoint-latest.pt holds nothing to
    resume: its run files are removed (and said so) so that the new run starts clean. A
    folder that holds something else (a model directory, foreign files of the same names)
    is refused rather than touched."""
    present = [n for n in RUN_FILES if (out / n).exists()]
    if not present:
        return
    if (out / "model.safetensors").exists():
        raise UserError(f"--out {out}: holds a model directory (model.safetensors); choose another --out")
    if (out / "config.json").exists():
        try:
            cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
            ours = isinstance(cfg, dict) and set(cfg) == {"model", "train"}
        except (ValueError, OSError):
            ours = False
        if not ours:
            raise UserError(f"--out {out}: its config.json is not a sentencemim run's; choose another --out")
    for n in present:
        (out / n).unlink()
    log(f"note: {out} held a run that stopped before its first checkpoint ({', '.join(present)}); "
        "those files were removed and the run starts afresh")


# ---------------------------------------------------------------------------- metrics.jsonl
def read_metrics(path: Path, log=None) -> list[dict]:
    """The records of a metrics.jsonl. A torn last line (a crash during an append) is dropped,
    with a note; a damaged line before the last is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if all(not x.strip() for x in lines[i:]):  # the last record: torn by a crash
                if log:
                    log(f"note: {path}:{i}: dropped a torn last record (the run was stopped while writing it)")
                break
            raise UserError(f"{path}:{i}: not a JSON record; the metrics file is damaged") from None
        records.append(rec)
    return records


def truncate_metrics(path: Path, step: int, log=None) -> None:
    """On resume, drop the records a killed run wrote after its last checkpoint (and a torn
    last line), so metrics.jsonl holds each step once, as an uninterrupted run would."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path, log) if r.get("step", 0) <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))


# ---------------------------------------------------------------------------- fingerprints
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprints(files: dict, vocab_path: Path) -> dict:
    """sha256 of each corpus file (by split, in reading order) and of vocab.json."""
    return {"format": FINGERPRINT_FORMAT,
            "corpus": {split: [{"file": Path(p).name, "bytes": Path(p).stat().st_size, "sha256": sha256(Path(p))}
                               for p in paths] for split, paths in files.items()},
            "vocab.json": sha256(vocab_path)}


def record_fingerprints(out: Path, fp: dict) -> None:
    write_atomic(out / FINGERPRINTS, json.dumps(fp, indent=1))


def check_fingerprints(out: Path, current: dict, accept: bool, log) -> None:
    """Compare the data of a resumed run with its recorded fingerprints. Absent (a run from
    before fingerprints): record them, with a note. A mismatch is an error unless `accept`
    (--accept-changed-data), which records the new ones."""
    path = out / FINGERPRINTS
    if not path.exists():
        record_fingerprints(out, current)
        log(f"note: {out} has no {FINGERPRINTS} (a run from before fingerprints); recorded the sha256 of its "
            "corpus files and vocab.json now, later resumes check them")
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved_corpus, saved_vocab = saved["corpus"], saved["vocab.json"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: damaged (not a fingerprints file); remove it to record new fingerprints") from None
    changed = []
    if saved_vocab != current["vocab.json"]:
        changed.append(f"{out / 'vocab.json'} (sha256 {current['vocab.json'][:12]}, recorded {saved_vocab[:12]})")
    for split, entries in current["corpus"].items():
        old = saved_corpus.get(split)
        if old is None:
            continue
        if [e["sha256"] for e in old] != [e["sha256"] for e in entries]:
            names = ", ".join(e["file"] for e in entries)
            changed.append(f"the {split} split ({names}: sha256 {', '.join(e['sha256'][:12] for e in entries)}, "
                           f"recorded {', '.join(e['sha256'][:12] for e in old)})")
    if not changed:
        return
    if not accept:
        raise UserError(f"{out}: the data differ from those the run was trained on: {'; '.join(changed)}. "
                        "Resume with the original files, or pass --accept-changed-data to continue anyway")
    record_fingerprints(out, current)
    log(f"note: --accept-changed-data: continuing on changed data ({'; '.join(changed)}); new fingerprints recorded")


# ---------------------------------------------------------------------------- config.json
def check_run_config(run_dir: Path) -> None:
    """A run directory's config.json (written by train; the checkpoint holds the settings
    that are used) is checked when present: an edited one with a wrong type or an unknown key
    is an error naming it, never silently ignored."""
    from .config import ModelConfig, TrainConfig, from_dict
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not {"model", "train"} <= set(cfg):
        raise UserError(f"{path}: not a run config (expected an object with 'model' and 'train')")
    from_dict(ModelConfig, cfg["model"], f"{path}: model.")
    from_dict(TrainConfig, cfg["train"], f"{path}: train.")


# ---------------------------------------------------------------------------- resumed settings
def resume_configs(saved_model: dict, saved_train: dict, model_req: dict, train_req: dict, source: str):
    """The settings of a resumed run: the saved ones, with the requested values of the keys a
    resume may change (RESUME_CHANGEABLE) applied. A requested value of any other key that
    differs from the saved one is refused with one message listing them all; equal values
    are accepted (they change nothing)."""
    from .config import ModelConfig, TrainConfig, from_dict
    from .cliargs import flag
    refused = [f"{flag(k)} {v} (the run has {saved_model.get(k)})" for k, v in model_req.items()
               if saved_model.get(k) != v]
    refused += [f"{flag(k)} {v} (the run has {saved_train.get(k)})" for k, v in train_req.items()
                if k not in RESUME_CHANGEABLE and saved_train.get(k) != v]
    if refused:
        raise UserError(f"--resume: {'; '.join(refused)}: a resumed run keeps its settings, only "
                        f"{', '.join(flag(k) for k in RESUME_CHANGEABLE)} may change; start a new run "
                        "(another --out) to change the others")
    mc = from_dict(ModelConfig, saved_model, f"{source}: model_config.")
    tc = from_dict(TrainConfig, {**saved_train, **{k: v for k, v in train_req.items() if k in RESUME_CHANGEABLE}},
                   f"{source}: train_config.")
    return mc, tc
