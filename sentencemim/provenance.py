"""Where a result came from: the command line and the commit of the code that ran.
Recorded in metrics.jsonl's start/resume events and read back by the model card."""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """Short commit of the sentencemim code this process runs, "+dirty" when its files
    differ from that commit, "unknown" outside a git checkout. Read once per process."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """This process's command, shell-quoted; the smim entry point (or `python -m
    sentencemim.cli`) is written as `smim`."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv else "python"
    if prog in ("smim", "cli.py", "__main__.py") or argv[0].endswith("sentencemim/cli.py"):
        prog = "smim"
    return shlex.join([prog] + argv[1:])
