"""Training checkpoints: plain types only (state dicts, config dicts, counters, RNG
states), written atomically and loaded with `torch.load(weights_only=True)`.

    write to .NAME.tmp in the same folder -> flush -> fsync -> os.replace(NAME)

A kill at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "sentencemim-checkpoint-1"


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


class _Writes:
    """A file wrapper that remembers the OSError of a failed write (torch.save reports it
    only as a RuntimeError, without the errno)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        try:
            return self.f.flush()
        except OSError as e:
            self.error = e
            raise


def save(state: dict, path: str | Path) -> None:
    """Write atomically. On any failure the temporary file is removed and the previous
    checkpoint is kept; a full disk is a one-line UserError (torch reports a failed write
    as a RuntimeError without the errno, so the free space is looked at)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    f = None
    try:
        with open(tmp, "wb") as raw:
            f = _Writes(raw)
            torch.save({"format": FORMAT, **state}, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        free = _free_bytes(path.parent)  # measured before the partial file is removed
        tmp.unlink(missing_ok=True)
        err = e if isinstance(e, OSError) else getattr(f, "error", None)  # torch hides the OSError in a RuntimeError
        full = (err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            (isinstance(e, RuntimeError) and free is not None and free < (1 << 20))
        if full:
            kept = "the previous one is kept; " if path.exists() else ""
            raise UserError(f"{path}: no space left on device while writing the checkpoint ({kept}no temporary "
                            "file left); free some space, then continue with --resume (a run without a "
                            "checkpoint-latest.pt yet starts again)") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unreadable(path: Path, e: Exception) -> str:
    """Why torch.load refused a file, in one line a user can act on."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty file (a checkpoint cut off while it was written?)"
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "not a readable checkpoint (truncated or corrupt: its archive has no end)"
    if not zipfile.is_zipfile(path):
        return ("not a checkpoint: sentencemim checkpoints are torch.save files (checkpoint-*.pt in a run "
                "directory); give the run directory, its checkpoint, or an exported model directory")
    if "Weights only load failed" in str(e):
        return ("holds Python objects beyond tensors and plain data, so it was not loaded (unpickling them "
                "could run code); sentencemim's own checkpoints hold plain data only")
    first = (str(e).splitlines() or [type(e).__name__])[0][:160]
    return f"not a readable checkpoint (truncated or corrupt?): {first}"


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        raise UserError(f"{path}: {_unreadable(path, e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a sentencemim checkpoint")
    return state
