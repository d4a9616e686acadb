"""benchmarks/gpu/ptb_matrix.sh, the one prepared GPU command, run end to end on the CPU
with a tiny config (DEVICE=cpu): training under its time budget with --parallel, the
--eval-only pass, and what it packs for the trip back (a summary and an archive, no weights)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from test_reproduce import write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("timeout") is None or shutil.which("bash") is None, reason="needs bash and timeout")
def test_gpu_script_on_cpu(tmp_path):
    cfg = write_config(tmp_path, variants=["lm", "mim"], heldout=None)  # the default held-out methods, as ptb.json
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "EVAL_S": "240", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/ptb_matrix.sh"), str(tmp_path / "data"), str(out),
                        str(cfg), "240", "2", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = (out / "log.txt").read_text()
    assert r.returncode == 0, log
    assert "training phase ended with status 0" in log and "evaluation phase ended with status 0" in log
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"lm-0-s0", "mim-2-s0"}
    for s in summary.values():
        assert s["steps"] == 6 and s["evaluated_step"] == 6 and s["eval_wall_s"] > 0
    with tarfile.open(out / "runs.tar.gz") as t:
        names = t.getnames()
    assert "runs/mim-2-s0/analysis.json" in names and not any(n.endswith(".pt") for n in names)
    assert not (out / "work").exists()
