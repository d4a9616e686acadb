"""Finished stages of a long evaluation, kept on disk so that an interrupted one resumes.

The reproduce driver's evaluation of a PTB model (MELBO repeats, IWAE, the held-out
methods under two priors, BLEU, the Fig. 3 cross terms) takes hours on a CPU, longer than
what is left of a session when a run finishes late in one. Each stage is seeded on its
own (no stage reads the global RNG another has advanced), so a stage's result does not
depend on whether the stages before it were computed now or read back; the resumed
evaluation equals an uninterrupted one exactly (tests/test_eval_stages.py).

    FOLDER/key.json      what the stages belong to: model fingerprint, data, settings, and a
                         hash of this package's source (stages of other code are not reused)
    FOLDER/NAME.json     one finished stage: its value and the seconds it took
    FOLDER.lock          held (flock) by the evaluation that keeps stages in FOLDER

A key that differs from the folder's (another checkpoint, other sentences, settings or
code) empties the folder first. While one evaluation holds the lock, a second one that
would use the same folder keeps no stages (and says so) instead of emptying or mixing the
first one's. Values are written as JSON, numpy arrays tagged with their dtype and shape
(floats round-trip exactly), through a temporary file and a rename, so a stage killed
while being written is simply computed again; a stage that cannot be written is computed
and used all the same.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # no flock here: every evaluation gets the lock
    fcntl = None


def _enc(x):
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.dtype.str, "shape": list(x.shape), "data": x.ravel().tolist()}
    if isinstance(x, torch.Tensor):
        return {"__tensor__": _enc(x.detach().cpu().numpy())}
    if isinstance(x, np.generic):
        return {"__npscalar__": x.dtype.str, "value": x.item()}
    if isinstance(x, tuple):
        return {"__tuple__": [_enc(v) for v in x]}
    if isinstance(x, list):
        return [_enc(v) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {"__dict__": {k: _enc(v) for k, v in x.items()}}
        return {"__items__": [[_enc(k), _enc(v)] for k, v in x.items()]}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"a stage value of type {type(x).__name__} cannot be kept")


def _dec(x):
    if isinstance(x, list):
        return [_dec(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__ndarray__" in x:
        return np.asarray(x["data"], dtype=np.dtype(x["__ndarray__"])).reshape(x["shape"])
    if "__tensor__" in x:
        return torch.from_numpy(_dec(x["__tensor__"]))
    if "__npscalar__" in x:
        return np.dtype(x["__npscalar__"]).type(x["value"])
    if "__tuple__" in x:
        return tuple(_dec(v) for v in x["__tuple__"])
    if "__items__" in x:
        return {_dec(k): _dec(v) for k, v in x["__items__"]}
    return {k: _dec(v) for k, v in x["__dict__"].items()}


def fingerprint(model, *datasets) -> str:
    """sha256 of the model's parameters and of the datasets' token ids."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for ds in datasets:
        if ds is None:
            h.update(b"no dataset")
            continue
        h.update(f"{len(ds)} sentences".encode())
        for s in ds.seqs:  # length first, so sentence boundaries count
            h.update(np.int64(len(s)).tobytes())
            h.update(np.asarray(s, dtype=np.int64).tobytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 of this package's Python source."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


_HELD: dict[str, object] = {}  # the lock files this process holds, by path


@atexit.register
def _close_held() -> None:
    """An evaluation stopped by an error keeps its lock to the end of the process: close it
    there (the file stays, so the next evaluation resumes from the kept stages)."""
    for f in _HELD.values():
        f.close()
    _HELD.clear()


def _lock(path: Path):
    """An exclusive, non-blocking flock on `path` (released when the process ends); None if
    another process holds it. This process may take a lock it holds again (a new Stages on
    the same folder). Where flock does not exist, every caller gets the lock."""
    key = str(path.resolve())
    if key in _HELD:
        return _HELD[key]
    f = open(path, "a")
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return None
    _HELD[key] = f
    return f


def _unlock(path: Path) -> None:
    f = _HELD.pop(str(path.resolve()), None)
    path.unlink(missing_ok=True)
    if f is not None:
        f.close()


def kept_stages(folder: str | Path) -> list[str]:
    """Names of the finished stages kept in a stages folder (none if it does not exist), read
    without taking its lock: for reports on an evaluation that may still be running."""
    return sorted(f.stem for f in Path(folder).glob("*.json") if f.name != "key.json")


class Stages:
    """Runs named stages, keeping each result in `folder` (None: keep nothing).
    `seconds[name]` is what a stage took when it was computed; `resumed` lists those
    read back from disk."""

    def __init__(self, folder: str | Path | None = None, key: dict | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.seconds: dict[str, float] = {}
        self.resumed: list[str] = []
        if self.folder is None:
            return
        key = json.loads(json.dumps({**(key or {}), "code": code_hash()}, default=str))
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.folder.with_name(self.folder.name + ".lock")
        if _lock(self._lock_path) is None:
            print(f"note: another evaluation is keeping its stages in {self.folder}; this one keeps none "
                  "(an interruption will start it over)", file=sys.stderr)
            self.folder = None
            return
        kf = self.folder / "key.json"
        if self.folder.exists():
            try:
                old = json.loads(kf.read_text())
            except (OSError, ValueError):
                old = None
            if old != key:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        kf.write_text(json.dumps(key, indent=1))

    def run(self, name: str, fn):
        """fn()'s value, computed now or read back from an earlier, interrupted evaluation."""
        path = None if self.folder is None else self.folder / f"{name}.json"
        if path is not None and path.exists():
            try:
                kept = json.loads(path.read_text())
                value, seconds = _dec(kept["value"]), float(kept["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: compute it again
            else:
                self.seconds[name] = seconds
                self.resumed.append(name)
                return value
        t0 = time.perf_counter()
        value = fn()
        self.seconds[name] = time.perf_counter() - t0
        if path is not None:
            tmp = path.with_name(f"{name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps({"seconds": self.seconds[name], "value": _enc(value)}))
                os.replace(tmp, path)
            except OSError as e:
                print(f"note: could not keep stage {name} in {self.folder} ({e.strerror}); carrying on",
                      file=sys.stderr)
        return value

    def kept(self) -> list[str]:
        """Names of the stages finished and kept on disk."""
        return [] if self.folder is None else kept_stages(self.folder)

    def total(self, *names: str) -> float:
        return sum(self.seconds.get(n, 0.0) for n in names)

    def resumed_seconds(self) -> float:
        """What the stages read back took when they were computed (earlier processes' time)."""
        return self.total(*self.resumed)

    def clear(self) -> None:
        """Drop the kept stages (after the whole evaluation has been saved) and the lock."""
        if self.folder is None:
            return
        if self.folder.exists():
            shutil.rmtree(self.folder)
        _unlock(self._lock_path)
