"""A small progress line on stderr: redrawn in place on a terminal, one line every
`interval` seconds otherwise (log files stay readable)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int | None, desc: str = "", interval: float = 10.0,
                 enabled: bool = True, stream=None, initial: int = 0):
        """`initial` counts work done before this process (a resumed run): it is shown
        in the count but left out of the rate, so the ETA reflects this run's speed."""
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.n = self.initial = initial
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1, **fields) -> None:
        self.n += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or (self.total and self.n >= self.total)):
            self._last = now
            self._draw(now, fields)

    def _draw(self, now, fields) -> None:
        elapsed = now - self.start
        parts = [self.desc]
        if self.total:
            rate = (self.n - self.initial) / max(elapsed, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            parts.append(f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                         f"{_fmt_time(elapsed)}<{_fmt_time(eta)}")
        else:
            parts.append(f"{self.n} {_fmt_time(elapsed)}")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()]
        line = " | ".join(p for p in parts if p)
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(s: float) -> str:
    if s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
