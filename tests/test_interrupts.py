"""Interrupted training loses nothing: SIGKILL at several points, SIGTERM/SIGINT,
and non-finite losses."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sentencemim import checkpoint
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.model import SentenceAE
from sentencemim.train import NumericalError, train

from conftest import write_corpus

TINY = ["--embedding-dim", "8", "--hidden-dim", "8", "--latent-dim", "3", "--batch-size", "8", "--log-every", "1",
        "--checkpoint-every", "1", "--patience", "1", "--seed", "3"]


def _cmd(corpus, out, steps, resume=False):
    base = [sys.executable, "-m", "sentencemim.cli", "train", "--out", str(out), "--max-steps", str(steps)]
    return base + (["--resume"] if resume else ["--corpus", str(corpus), *TINY])


def _steps(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return [r for r in out if r["kind"] == "train"]


def _run_until(cmd, run, step, sig):
    """Start training, wait until it has logged `step`, then send `sig`."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if any(r["step"] >= step for r in _steps(run)):
            break
        time.sleep(0.02)
    if p.poll() is None:
        os.kill(p.pid, sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, err


def test_sigkill_at_several_points_then_resume_reproduces_the_curve(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    total = 32
    r = subprocess.run(_cmd(corpus, tmp_path / "full", total), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "killed"
    code, err = _run_until(_cmd(corpus, run, total), run, 4, signal.SIGKILL)
    kills = 1 if code == -signal.SIGKILL else 0
    for at in (12, 22):
        code, err = _run_until(_cmd(corpus, run, total, resume=True), run, at, signal.SIGKILL)
        kills += code == -signal.SIGKILL
    assert kills >= 2, "the training finished before it could be killed"
    r = subprocess.run(_cmd(corpus, run, total, resume=True), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    full = {r["step"]: r["loss"] for r in _steps(tmp_path / "full")}
    resumed = _steps(run)
    assert [r["step"] for r in resumed] == list(range(1, total + 1))  # each step once
    for rec in resumed:
        assert rec["loss"] == pytest.approx(full[rec["step"]], rel=1e-6, abs=1e-6), rec["step"]
    assert not list(run.glob(".*.tmp")) or checkpoint.load(run / "checkpoint-latest.pt")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_checkpoint_and_exits_cleanly(tmp_path, sig):
    corpus = write_corpus(tmp_path / "c", sizes=(400, 10, 10))
    run = tmp_path / "r"
    cmd = _cmd(corpus, run, 100000)
    cmd[cmd.index("--checkpoint-every") + 1] = "100000"  # only the signal can have written it
    code, err = _run_until(cmd, run, 3, sig)
    assert code == 128 + sig, err
    assert "Traceback" not in err and "continue with --resume" in err
    state = checkpoint.load(run / "checkpoint-latest.pt")
    assert state["state"]["step"] >= 3
    events = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "interrupted" and events[-1]["step"] == state["state"]["step"]


def _nan_after(monkeypatch, n_calls):
    calls = {"n": 0}
    original = SentenceAE.token_nll

    def token_nll(self, *a, **k):
        rec, eos = original(self, *a, **k)
        if self.training:
            calls["n"] += 1
            if calls["n"] > n_calls:
                rec = rec * float("nan")
        return rec, eos

    monkeypatch.setattr(SentenceAE, "token_nll", token_nll)


def _tiny(corpus, **kw):
    return (ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=3),
            TrainConfig(corpus=str(corpus), batch_size=8, log_every=1, checkpoint_every=1, **kw))


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "c")
    _nan_after(monkeypatch, 4)
    with pytest.raises(NumericalError, match="non-finite loss at step 5"):
        train(*_tiny(corpus, max_steps=20), tmp_path / "r", quiet=True)
    state = checkpoint.load(tmp_path / "r" / "checkpoint-latest.pt")
    assert state["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_skip_policy_skips_and_counts(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "c")
    _nan_after(monkeypatch, 4)
    result = train(*_tiny(corpus, max_steps=8, nan_policy="skip"), tmp_path / "r", quiet=True)
    assert result["step"] == 8 and result["skipped_steps"] == 4
    state = checkpoint.load(tmp_path / "r" / "checkpoint-latest.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    events = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "skipped_step" for e in events) == 4
