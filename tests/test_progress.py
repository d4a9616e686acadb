"""The progress line's ETA must come from this process's rate, not count resumed steps."""

import io

from sentencemim import progress


def test_eta_ignores_work_done_before_a_resume(monkeypatch):
    clock = iter([100.0, 110.0])  # start, then one update ten seconds later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.Progress(1000, "train", interval=0.0, stream=out, initial=900)
    bar.update(10)  # 10 steps in 10 s: 1 step/s, 90 left -> 90 s
    line = out.getvalue().strip()
    assert "910/1000 (91%)" in line
    assert "00:10<01:30" in line  # counting the resumed 900 would give 9 s


def test_eta_without_resume():
    out = io.StringIO()
    bar = progress.Progress(4, "x", interval=0.0, stream=out)
    bar.update(4)
    assert "4/4 (100%)" in out.getvalue()
    assert "<00:00" in out.getvalue()
