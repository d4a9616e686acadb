"""`smim reproduce` on a tiny synthetic matrix: a finished run is skipped, an interrupted
one resumes where it stopped, --only picks a subset, the page is re-created from the
saved evaluations, config mistakes are errors."""

import json

import pytest

from sentencemim import checkpoint
from sentencemim.cli import main
from sentencemim.errors import UserError
from sentencemim.reproduce import load_config, plan

pytest.importorskip("matplotlib")


# The held-out bounds with two cheap methods: the default set (fitted Gaussians, mixture
# components, validation grids) was half of every tiny evaluation. test_subset_skip_resume_and_page
# keeps the defaults (heldout=None); tests/test_heldout_*.py test every method.
LIGHT_HELDOUT = {"heldout_methods": "q,gauss", "heldout_valid": 4, "widen_factors": "3", "fixed_stds": "0.3"}


def write_config(tmp_path, **extra):
    extra.setdefault("heldout", LIGHT_HELDOUT)
    if extra["heldout"] is None:  # the driver's default held-out settings
        del extra["heldout"]
    cfg = {"name": "tiny", "corpus": "synthetic", "data_dir": str(tmp_path / "data"),
           "runs_dir": str(tmp_path / "runs"),
           "model": {"embedding_dim": 8, "hidden_dim": 8},
           "train": {"max_steps": 6, "batch_size": 50, "eval_max_sentences": 50, "log_every": 2,
                     "checkpoint_every": 2},
           "variants": ["mim", "vae", "ae"], "latent_dims": [2], "seeds": [0],
           "evaluate": {"max_sentences": 20, "iwae_k": 2, "agg_prior_m": 10, "repeats": 2, "fig3_n": 4,
                        "fig5_trials": 3},
           "report": {"page": str(tmp_path / "docs" / "tiny.md"), "figures": str(tmp_path / "docs" / "tiny"),
                      "paper": {"mim-2": {"melbo_nll": 12.5, "bleu": 0.25}}},
           "latent": {"page": str(tmp_path / "docs" / "tiny-latent.md"), "models": ["mim-2"], "ae": "ae-2",
                      "sentences": ["kasa0 sanu3"], "pairs": [["kasa0 sanu3", "mika1 miti1"]], "n_samples": 2},
           **extra}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg))
    return path


def step_of(run_dir):
    return checkpoint.load(run_dir / "checkpoint-latest.pt")["state"]["step"]


def test_subset_skip_resume_and_page(tmp_path, capsys):
    cfg = write_config(tmp_path, heldout=None)
    runs = tmp_path / "runs"
    # a subset, with fewer steps: an "interrupted" matrix
    assert main(["reproduce", str(cfg), "--only", "mim-2,ae-2-s0", "--max-steps", "3", "--no-eval", "--quiet"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["ae-2-s0", "mim-2-s0"]
    assert step_of(runs / "mim-2-s0") == 3
    # the full command resumes those two and trains the third
    assert main(["reproduce", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mim-2-s0         partial  step 3" in out and "vae-2-s0         new" in out
    assert "resuming at step 3" in out
    for name in ("mim-2-s0", "vae-2-s0", "ae-2-s0"):
        assert step_of(runs / name) == 6
        assert (runs / name / "analysis.json").exists()
    rec = json.loads((runs / "mim-2-s0" / "reproduce.json").read_text())
    assert [(s["step_from"], s["step_to"]) for s in rec["sessions"]] == [(0, 3), (3, 6)]
    assert rec["sessions"][1]["command"].endswith("--resume")
    # metrics hold every step once, as an uninterrupted run would
    steps = [json.loads(x)["step"] for x in (runs / "mim-2-s0" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == [2, 4, 6]
    page = (tmp_path / "docs" / "tiny.md").read_text()
    assert "| sMIM (2) | 6 |" in page and "12.50" in page and "0.250" in page
    assert (tmp_path / "docs" / "tiny" / "mim-2-s0-fig5.png").exists()

    # finished runs and evaluations are skipped: nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint-latest.pt")}
    assert main(["reproduce", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("evaluation of step 6 exists: skipped") == 3 and "training:" not in out
    assert mtimes == {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint-latest.pt")}

    # raising --max-steps continues the finished runs
    assert main(["reproduce", str(cfg), "--only", "vae-2", "--max-steps", "8", "--no-eval", "--quiet"]) == 0
    assert step_of(runs / "vae-2-s0") == 8

    # the page can be re-created without training
    (tmp_path / "docs" / "tiny.md").unlink()
    assert main(["reproduce", str(cfg), "--report-only"]) == 0
    assert "| AE (2) |" in (tmp_path / "docs" / "tiny.md").read_text()
    assert main(["reproduce", str(cfg), "--latent-only"]) == 0
    latent = (tmp_path / "docs" / "tiny-latent.md").read_text()
    assert "$ smim reconstruct" in latent and "(AE)" in latent and "$ smim interpolate" in latent


def test_page_names_the_runs_it_does_not_report_yet(tmp_path):
    """An interim page (some runs evaluated) says which runs of the config it leaves out and
    where they stand, instead of dropping them silently."""
    cfg = write_config(tmp_path, variants=["mim", "ae"])
    assert main(["reproduce", str(cfg), "--only", "mim-2", "--quiet"]) == 0
    # a page written by a run of --only names the config's other runs too
    assert "| ae-2-s0 | new | 0 |" in (tmp_path / "docs" / "tiny.md").read_text()
    assert main(["reproduce", str(cfg), "--only", "ae-2", "--max-steps", "2", "--no-eval", "--quiet"]) == 0
    # mim-2 evaluated part-way through its training: its last session is still running
    rec_path = tmp_path / "runs" / "mim-2-s0" / "reproduce.json"
    rec = json.loads(rec_path.read_text())
    rec["sessions"][-1]["step_to"] = 3
    rec["sessions"].append({"started": "2026-12-01 14:53:30 UTC", "status": "running", "step_from": 3,
                            "command": "smim train ... --resume", "commit": "x"})
    rec_path.write_text(json.dumps(rec))
    assert main(["reproduce", str(cfg), "--report-only"]) == 0
    page = (tmp_path / "docs" / "tiny.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| mim-2-s0 | sMIM (2) |"))
    assert "before step 3, then a session recorded as running (started 2026-12-01 14:53:30 UTC: still training" in row
    assert "killed sessions" not in row
    assert "**Not on this page yet:** 1 run(s) of the config have no finished evaluation" in page
    row = next(line for line in page.splitlines() if line.startswith("| ae-2-s0 |"))
    assert row.startswith("| ae-2-s0 | partial | 2 |"), row
    assert "| mim-2-s0 | sMIM (2) |" in page  # the evaluated run is reported as usual


def test_latent_page_with_nothing_trained_is_refused_and_writes_nothing(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["reproduce", str(cfg), "--latent-only"]) == 2
    assert "is trained yet" in capsys.readouterr().err
    assert not (tmp_path / "docs" / "tiny-latent.md").exists()


def test_a_killed_evaluation_resumes_from_its_finished_stages(tmp_path, capsys, stop_at_stage):
    """The driver keeps each finished evaluation stage in RUN/analysis-stages until
    analysis.json is written; Ctrl-C during BLEU loses only the decoding pass it stopped in
    and what follows it."""
    cfg = write_config(tmp_path)  # LIGHT_HELDOUT
    run = tmp_path / "runs" / "mim-2-s0"
    assert main(["reproduce", str(cfg), "--only", "mim-2", "--no-eval", "--quiet"]) == 0
    stop_at_stage("bleu_sample_sample_1")
    capsys.readouterr()
    assert main(["reproduce", str(cfg), "--only", "mim-2", "--quiet"]) == 130
    assert (f"[mim-2-s0] interrupted during its evaluation (6 finished stage(s) kept in {run / 'analysis-stages'}); "
            "run the same command again to resume") in capsys.readouterr().out
    assert not (run / "analysis.json").exists()
    assert sorted(p.stem for p in (run / "analysis-stages").glob("*.json")) == [
        "bleu_sample_sample_0", "heldout", "heldout_train_prior", "iwae", "key", "melbo_repeat_0", "melbo_repeat_1"]
    stop_at_stage(None)
    capsys.readouterr()
    assert main(["reproduce", str(cfg), "--only", "mim-2", "--quiet"]) == 0
    assert ("resuming: 6 stage(s) already done (bleu_sample_sample_0, heldout, heldout_train_prior, iwae, "
            "melbo_repeat_0, melbo_repeat_1)") in capsys.readouterr().out
    res = json.loads((run / "analysis.json").read_text())
    assert sorted(res["resumed_stages"]) == ["bleu_sample_sample_0", "heldout", "heldout_train_prior", "iwae",
                                             "melbo_repeat_0", "melbo_repeat_1"]
    assert res["wall_s"] >= sum(res["resumed_stages"].values())  # the earlier process's time is counted
    assert res["report"]["timing_s"]["evaluate_total"] >= sum(res["resumed_stages"].values())
    assert "bleu" in res["report"] and not (run / "analysis-stages").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_an_evaluation_with_one_line_keeping_its_stages(tmp_path, sig):
    """SIGINT (Ctrl-C) or SIGTERM stops a reproduce evaluation within seconds, with one line
    and the finished stages kept. SIGTERM once ended it with no word, and a job that a shell
    without job control starts with `&` has SIGINT ignored (Python keeps it so): ptb_paper_runs.sh
    once had to SIGKILL such an evaluation. The SIGTERM case runs as such a job."""
    import os
    import signal
    import subprocess
    import sys
    import time
    cfg = write_config(tmp_path, variants=["mim"], evaluate={"max_sentences": 20, "iwae_k": 2, "agg_prior_m": 0,
                                                             "repeats": 2, "fig3_n": 4, "fig5_trials": 3},
                       heldout={"heldout_methods": "q,ais", "heldout_valid": 2, "ais_steps": "3000",
                                "ais_chains": 2, "ais_pilot_chains": 1, "ais_sentences": 20})
    run = tmp_path / "runs" / "mim-2-s0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sentencemim.cli", "reproduce", str(cfg), "--no-report"]
    assert subprocess.run(cmd + ["--no-eval", "--quiet"], env=env, capture_output=True).returncode == 0
    # SIGTERM: as a background job, SIGINT ignored; SIGINT: as a foreground command, SIGINT at its
    # default (set here: an ignored SIGINT is inherited, and this suite may itself run as such a job)
    disposition = signal.SIG_IGN if sig == "SIGTERM" else signal.SIG_DFL
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    deadline = time.monotonic() + 120
    stages = run / "analysis-stages"
    while time.monotonic() < deadline and not (stages / "heldout.json").exists():  # AIS comes after it
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(getattr(signal, sig))
    time.sleep(0.01)
    p.send_signal(getattr(signal, sig))  # a stop often arrives twice (a run and its driver both pass it on)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"{sig} did not stop the evaluation within 30 s")
    assert p.returncode == 128 + getattr(signal, sig), out
    assert "Traceback" not in out and "[mim-2-s0] interrupted during its evaluation (" in out, out
    assert "run the same command again to resume" in out
    assert (stages / "heldout.json").exists() and not (run / "analysis.json").exists()


def test_an_inherited_ignored_sigint_stays_ignored_and_sigterm_is_handled_once():
    import signal
    from sentencemim import cli
    from sentencemim.errors import Interrupted
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        old = cli._stop_on_signals()
        assert set(old) == {signal.SIGTERM} and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        old = cli._stop_on_signals()
        assert set(old) == {signal.SIGINT, signal.SIGTERM}
        with pytest.raises(Interrupted) as e:
            signal.raise_signal(signal.SIGTERM)
        assert e.value.signum == signal.SIGTERM
        # the first signal disarms both: a second one does not interrupt the cleanup of the first
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN == signal.getsignal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        assert cli._FIRED == [signal.SIGTERM]
    finally:
        cli._FIRED.clear()
        for s, h in saved.items():
            signal.signal(s, h)


def test_a_killed_session_is_recorded_up_to_its_last_checkpoint(tmp_path, capsys):
    """A resumed session is recorded when it starts, so a driver killed mid-session (a hard
    stop) leaves a record; the next session closes it at its last checkpoint. Steps no record
    covers (drivers killed before records were written at the start) are named on the page."""
    import os
    import time
    cfg = write_config(tmp_path, variants=["mim"])
    run = tmp_path / "runs" / "mim-2-s0"
    assert main(["reproduce", str(cfg), "--max-steps", "2", "--no-eval", "--quiet"]) == 0
    assert main(["reproduce", str(cfg), "--max-steps", "4", "--no-eval", "--quiet"]) == 0
    rec = json.loads((run / "reproduce.json").read_text())
    assert [(s["step_from"], s["step_to"], s["status"]) for s in rec["sessions"]] == [(0, 2, "finished"),
                                                                                      (2, 4, "finished")]
    # what a driver killed while training from step 4 leaves: its record, still "running"
    ck = run / "checkpoint-latest.pt"
    os.utime(ck, (time.time() - 50, time.time() - 50))  # its last checkpoint, 50 s before now
    rec["sessions"] = rec["sessions"][1:]  # and an older session with no record: steps 0-2
    rec["sessions"].append({"started": "then", "started_unix": time.time() - 150, "status": "running",
                            "step_from": 4, "command": "smim reproduce ...", "commit": "abc", "machine": "m"})
    (run / "reproduce.json").write_text(json.dumps(rec))
    assert main(["reproduce", str(cfg), "--quiet"]) == 0
    rec = json.loads((run / "reproduce.json").read_text())
    killed, last = rec["sessions"][1], rec["sessions"][2]
    assert killed["status"] == "killed" and killed["step_to"] == 4 and 95 < killed["wall_s"] < 110
    assert (last["step_from"], last["step_to"], last["status"]) == (4, 6, "finished") and "wall_s" in last
    page = (tmp_path / "docs" / "tiny.md").read_text()
    assert "(no record of steps 0-2: killed sessions)" in page
    assert "# mim-2-s0: steps 4 -> 4," in page and "(killed: ended at its last checkpoint)" in page


def test_a_run_another_process_is_training_is_left_alone(tmp_path, capsys):
    """The driver takes a run's lock before it reads, clears or records anything. Reaching a run
    that another process is training (a run started by hand beside a driver), it stops with the
    lock's one-line error: it neither clears the folder of a run in its first steps (the old
    code deleted it, lock file and all, and trained beside the other process) nor adds a
    session record that the other process then closes as its own."""
    from sentencemim.rundir import RunLock
    cfg = write_config(tmp_path, variants=["mim"])
    run = tmp_path / "runs" / "mim-2-s0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")  # a run in its first steps: no checkpoint yet
    lock = RunLock(run).acquire()
    try:
        assert main(["reproduce", str(cfg), "--max-steps", "2", "--no-eval", "--quiet"]) != 0
        assert (run / "metrics.jsonl").read_text() == "{}\n"
        assert "another smim process" in capsys.readouterr().err
    finally:
        lock.release()
    assert main(["reproduce", str(cfg), "--max-steps", "2", "--no-eval", "--quiet"]) == 0  # it was never started
    before = (run / "reproduce.json").read_text()
    lock = RunLock(run).acquire()
    try:
        assert main(["reproduce", str(cfg), "--max-steps", "4", "--no-eval", "--quiet"]) != 0
        assert (run / "reproduce.json").read_text() == before and step_of(run) == 2
    finally:
        lock.release()
    assert main(["reproduce", str(cfg), "--max-steps", "4", "--no-eval", "--quiet"]) == 0
    rec = json.loads((run / "reproduce.json").read_text())
    assert [(s["step_from"], s["step_to"], s["status"]) for s in rec["sessions"]] == [(0, 2, "finished"),
                                                                                      (2, 4, "finished")]


def test_a_never_checkpointed_run_that_fails_at_once_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """Clearing a run that stopped before its first checkpoint keeps the lock file it holds; if
    training then fails at once, the folder is removed (only the lock file was left in it), so
    nothing takes the run for a started one."""
    import sentencemim.train
    cfg = write_config(tmp_path, variants=["mim"])
    run = tmp_path / "runs" / "mim-2-s0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")

    def fails(*a, **k):
        raise UserError("fails at once")
    monkeypatch.setattr(sentencemim.train, "train", fails)
    assert main(["reproduce", str(cfg), "--no-eval", "--quiet"]) != 0
    assert "fails at once" in capsys.readouterr().err
    assert not run.exists()


def test_external_run_is_snapshotted_not_trained(tmp_path, capsys):
    cfg = write_config(tmp_path, variants=["mim"])
    assert main(["reproduce", str(cfg), "--no-eval", "--quiet"]) == 0
    src = tmp_path / "runs" / "mim-2-s0"
    cfg2 = write_config(tmp_path, variants=["mim"], runs_dir=str(tmp_path / "runs2"),
                        external={"mim-2": {"path": str(src), "checkpoint": "latest"}})
    before = (src / "checkpoint-latest.pt").stat().st_mtime_ns
    assert main(["reproduce", str(cfg2), "--quiet"]) == 0
    snap = tmp_path / "runs2" / "mim-2-s0"
    assert (snap / "checkpoint-latest.pt").exists() and (snap / "analysis.json").exists()
    ext = json.loads((snap / "reproduce.json").read_text())["external"]
    assert ext["step"] == 6 and ext["wall_from"] == "from its file times"
    assert (src / "checkpoint-latest.pt").stat().st_mtime_ns == before


def test_external_run_training_time_can_be_stated(tmp_path):
    """A run paused between sessions: its file times would count the pause."""
    cfg = write_config(tmp_path, variants=["mim"])
    assert main(["reproduce", str(cfg), "--no-eval", "--quiet"]) == 0
    cfg2 = write_config(tmp_path, variants=["mim"], runs_dir=str(tmp_path / "runs2"),
                        external={"mim-2": {"path": str(tmp_path / "runs" / "mim-2-s0"), "checkpoint": "latest",
                                            "wall_s": 1234.0, "wall_from": "summed from its log"}})
    assert main(["reproduce", str(cfg2), "--no-eval", "--quiet"]) == 0
    ext = json.loads((tmp_path / "runs2" / "mim-2-s0" / "reproduce.json").read_text())["external"]
    assert ext["wall_s"] == 1234.0 and ext["wall_from"] == "summed from its log"


def test_config_mistakes_are_errors(tmp_path):
    with pytest.raises(UserError, match="unknown config key"):
        load_config(write_config(tmp_path, epochs=3))
    with pytest.raises(UserError, match="unknown variant"):
        load_config(write_config(tmp_path, variants=["mim", "gan"]))
    cfg = load_config(write_config(tmp_path))
    with pytest.raises(UserError, match="no run named"):
        plan(cfg, ["mim-3"])
    assert [r.name for r in plan(cfg, ["vae-2"])] == ["vae-2-s0"]


def test_heldout_settings_per_run(tmp_path):
    """run_heldout: a run's own held-out settings (by VARIANT-D, then NAME) over heldout{}; a
    mistake in them is a one-line error naming the key."""
    from sentencemim.reproduce.driver import heldout_settings
    cfg = load_config(write_config(tmp_path, heldout={"heldout_methods": "q,gauss", "heldout_valid": 5},
                                   run_heldout={"mim-2": {"heldout_methods": "q,gauss,ais", "ais_sentences": 3},
                                                "mim-2-s0": {"ais_chains": 4}}))
    runs = {r.name: r for r in plan(cfg)}
    mim, vae = heldout_settings(cfg, runs["mim-2-s0"]), heldout_settings(cfg, runs["vae-2-s0"])
    assert (mim.heldout_methods, mim.ais_sentences, mim.ais_chains, mim.heldout_valid) == ("q,gauss,ais", 3, 4, 5)
    assert (vae.heldout_methods, vae.ais_sentences, vae.heldout_valid) == ("q,gauss", 0, 5)
    with pytest.raises(UserError, match="run_heldout.mim-2.*ais_sentences"):
        load_config(write_config(tmp_path, run_heldout={"mim-2": {"ais_sentences": -1}}))
    with pytest.raises(UserError, match="run_heldout.mim-2 must be an object"):
        load_config(write_config(tmp_path, run_heldout={"mim-2": 3}))
    with pytest.raises(UserError, match="needs an AIS method"):  # the merged settings are checked at load
        load_config(write_config(tmp_path, run_heldout={"mim-2": {"ais_sentences": 3}}))
    with pytest.raises(UserError, match="run_heldout: no run named mim-3"):  # a key that names no run
        plan(load_config(write_config(tmp_path, run_heldout={"mim-3": {"ais_chains": 4}})))


def test_checkpoint_per_run(tmp_path):
    cfg = write_config(tmp_path, variants=["mim", "ae"])
    c = json.loads(cfg.read_text())
    c["evaluate"]["checkpoint"] = {"default": "best", "ae-2": "latest"}
    cfg.write_text(json.dumps(c))
    assert main(["reproduce", str(cfg), "--quiet", "--no-report"]) == 0
    runs = tmp_path / "runs"
    assert json.loads((runs / "mim-2-s0" / "analysis.json").read_text())["checkpoint"] == "best"
    assert json.loads((runs / "ae-2-s0" / "analysis.json").read_text())["checkpoint"] == "latest"
    assert main(["reproduce", str(tmp_path / "missing.json")]) == 2


def test_shipped_configs_parse():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
    full = plan(load_config(root / "ptb.json"))
    assert len(full) == 4 * 3 * 3 and {r.tc.objective for r in full} == {"mim", "vae", "ae"}
    assert all(r.mc.hidden_dim == 512 and r.mc.embedding_dim == 300 and r.tc.lr == 1e-3 for r in full)
    small = plan(load_config(root / "ptb-cpu-small.json"))
    assert [r.name for r in small if r.external] == ["mim-512-s0", "ae-512-s0"]


def test_shipped_configs_use_the_data_dir_resolution_of_the_readme():
    """No hard-coded folder: --data-dir, else $SENTENCEMIM_DATA, else the cache."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
    configs = sorted(root.glob("*.json"))
    assert configs
    for path in configs:
        assert json.loads(path.read_text()).get("data_dir") is None, path.name


def test_large_corpus_configs_use_the_large_preset():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
    for name in ("yahoo", "yelp15", "wt103", "yahoo-valid-as-train"):
        runs = plan(load_config(root / f"{name}.json"))
        assert runs and all(r.mc.embedding_dim == 512 and r.mc.hidden_dim == 1024 and r.tc.optimizer == "sgd"
                            and r.tc.lr == 5.0 and r.tc.clip == 0.25 and r.tc.patience == 1 for r in runs)
        assert {r.tc.kl_annealing for r in runs if r.tc.objective == "vae"} == {"logistic"}


def test_several_seeds_are_labelled_and_summarised(tmp_path):
    cfg = write_config(tmp_path, variants=["mim", "ae"], seeds=[0, 1], exclude=["ae-2-s1"])
    c = json.loads(cfg.read_text())
    c["report"]["references"] = {"title": "Beside the references", "rows": [
        {"name": "(a) LM", "ppl": 119, "nll": 101, "note": "exact"}]}
    cfg.write_text(json.dumps(c))
    assert main(["reproduce", str(cfg), "--quiet"]) == 0
    page = (tmp_path / "docs" / "tiny.md").read_text()
    # the reference rows, then each run's lowest held-out bound
    refs = page.split("### Beside the references")[1].split("\n## ")[0]
    assert "| (a) LM (paper) | 101.00 | 119.00 | exact |" in refs
    rep = json.loads((tmp_path / "runs" / "mim-2-s1" / "analysis.json").read_text())["report"]
    best = min(rep[k]["nll_per_sentence"] for k in ("elbo", "iwae", "iwae_train_prior"))
    assert f"| sMIM (2) s1, step 6 (ours) | {best:.2f} |" in refs
    # each seed is its own row; a model with one seed keeps the paper's label
    assert "| sMIM (2) s0 | 6 |" in page and "| sMIM (2) s1 | 6 |" in page and "| AE (2) | 6 |" in page
    seeds = page.split("## Seeds")[1].split("\n## ")[0]
    row = next(ln for ln in seeds.splitlines() if ln.startswith("| sMIM (2) |"))
    assert "| 0, 1 | 6 |" in row and "AE (2)" not in seeds
    reps = [json.loads((tmp_path / "runs" / f"mim-2-s{s}" / "analysis.json").read_text())["report"] for s in (0, 1)]
    kls = [r["kl"]["mean"] for r in reps]
    bleus = [r["bleu"]["sentence_bleu1"] for r in reps]
    assert kls[0] != kls[1]  # the seeds differ, so the summary is not one run's numbers
    assert f"{sum(kls) / 2:.2f} [{min(kls):.2f}, {max(kls):.2f}]" in row
    assert f"{sum(bleus) / 2:.3f} [{min(bleus):.3f}, {max(bleus):.3f}]" in row


def test_parallel_runs_with_the_language_model_reference(tmp_path, capsys):
    """--parallel 2 trains and evaluates the runs as two child processes at once; the GRU LM
    variant (no latent) is planned once, evaluated by its exact NLL, and shown beside the
    held-out bounds. The children's results equal a serial run's (same seeds)."""
    cfg = write_config(tmp_path, variants=["lm", "mim"], latent_dims=[2],
                       evaluate={"max_sentences": 20, "bound_sentences": 8, "iwae_k": 3, "agg_prior_m": 10,
                                 "repeats": 2, "fig3_n": 4, "fig5_trials": 3},
                       heldout={"heldout_methods": "q,gauss,ais", "heldout_valid": 5, "widen_factors": "3",
                                "fixed_stds": "0.3", "ais_sentences": 3, "ais_steps": "2,3", "ais_chains": 2,
                                "ais_pilot_chains": 1, "gradient_precision": "fp32"})
    runs = tmp_path / "runs"
    assert [r.name for r in plan(load_config(cfg))] == ["lm-0-s0", "mim-2-s0"]
    assert main(["reproduce", str(cfg), "--parallel", "2", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "up to 2 at once, 1 CPU thread(s) each" in out
    assert "[lm-0-s0] finished" in out and "[mim-2-s0] finished" in out
    for name in ("lm-0-s0", "mim-2-s0"):
        assert step_of(runs / name) == 4 and (runs / f"{name}.log").exists()
    lm = json.loads((runs / "lm-0-s0" / "analysis.json").read_text())
    assert lm["report"]["language_model"] and lm["report"]["exact"]["bound"] == "exact"
    page = (tmp_path / "docs" / "tiny.md").read_text()
    assert "GRU LM exact NLL" in page and f"{lm['report']['exact']['nll_per_sentence']:.2f}" in page
    # the tightest held-out bounds, on 8 of the 20 sentences, beside the LM's exact NLL on those same 8
    import numpy as np
    mim = json.loads((runs / "mim-2-s0" / "analysis.json").read_text())["report"]
    idx = np.load(runs / "mim-2-s0" / "analysis.npz")["ps_bound_index"]
    lm_nll = np.load(runs / "lm-0-s0" / "analysis.npz")["ps_nll"]
    assert len(idx) == 8 and mim["heldout"]["sentences"] == 8 and mim["iwae"]["subset"]["of"] == 20
    table = page.split("### Tightest held-out bounds", 1)[1].split("\n\n###", 1)[0]
    assert "| 8 of 20 |" in table and mim["heldout"]["method"] in table and "K=1: " in table
    assert f"{lm_nll[idx].mean():.2f}" in table and f"{mim['heldout']['nll_per_sentence']:.2f}" in table
    # AIS on 3 of those 8 (ais_sentences), not in the choice, beside the LM on the same 3
    assert mim["heldout"]["method"] != "ais" and "ais" not in mim["heldout"]["methods"]
    sub = mim["heldout"]["ais_subset"]
    assert sub["sentences"] == 3 and sub["of"] == 8 and set(sub["index_in_split"]) <= set(idx.tolist())
    assert "skipped" in mim["heldout_train_prior"]["ais_subset"]
    ais_table = page.split("### AIS on a subset", 1)[1].split("\n\n###", 1)[0]
    assert "| 3 of 8 | ais [AIS from the prior" in ais_table and "T=2: " in ais_table and "T=3: " in ais_table
    assert f"{lm_nll[sub['index_in_split']].mean():.2f}" in ais_table
    assert f"{sub['methods']['ais']['nll_per_sentence'] - lm_nll[sub['index_in_split']].mean():+.2f}" in ais_table
    # the same run trained serially in this process gives the same numbers
    serial = tmp_path / "serial"
    assert main(["reproduce", str(cfg), "--only", "lm-0-s0", "--max-steps", "4", "--runs-dir", str(serial),
                 "--no-report", "--quiet"]) == 0
    again = json.loads((serial / "lm-0-s0" / "analysis.json").read_text())
    assert again["report"]["exact"]["nll_per_sentence"] == pytest.approx(lm["report"]["exact"]["nll_per_sentence"])


def test_parallel_reports_a_failed_child(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("a b c\n")  # no valid.txt: each child stops with a one-line error
    cfg = write_config(tmp_path, variants=["mim", "ae"], corpus=str(corpus))
    assert main(["reproduce", str(cfg), "--parallel", "2", "--no-eval"]) == 2
    out = capsys.readouterr().out
    assert out.count("FAILED (status 2)") == 2 and "valid" in out


def test_parallel_ctrl_c_checkpoints_the_children_and_says_interrupted(tmp_path):
    """Ctrl-C to `reproduce --parallel` is passed on: each child checkpoints and stops, and the
    driver reports them as interrupted (not failed) and exits 130; the same command resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    cfg = write_config(tmp_path, variants=["mim", "ae"], train={"max_steps": 100000, "batch_size": 50,
                                                                "eval_max_sentences": 50, "log_every": 2,
                                                                "checkpoint_every": 1000, "eval_every": 1000})
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "sentencemim.cli", "reproduce", str(cfg), "--parallel", "2",
                          "--no-eval"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    logs = [runs / "mim-2-s0.log", runs / "ae-2-s0.log"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not all(f.exists() and "train |" in f.read_text() for f in logs):
        time.sleep(0.5)
    # first a signal to one child alone (as `kill -INT` of one run would): interrupted, not failed
    child = subprocess.run(["pgrep", "-f", "--", "--only ae-2-s0 "], capture_output=True, text=True).stdout.split()
    assert len(child) == 1, child
    os.kill(int(child[0]), signal.SIGINT)
    while time.monotonic() < deadline and "interrupted at step" not in logs[1].read_text():
        time.sleep(0.5)
    time.sleep(3)  # the driver polls its children every 2 s
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert out.count("] interrupted after") == 2 and "FAILED" not in out, out
    assert "run the same command again to resume" in out
    for name in ("mim-2-s0", "ae-2-s0"):
        assert 0 < step_of(runs / name) < 100000


def test_parallel_run_interrupted_alone_is_reported_and_the_rest_finish(tmp_path):
    """One child stopped by a signal of its own (not the driver's Ctrl-C): the others finish,
    the driver names the interrupted run and exits 130, not with a failure."""
    import os
    import signal
    import subprocess
    import sys
    import time
    cfg = write_config(tmp_path, variants=["mim", "ae"], train={"max_steps": 100000, "batch_size": 50,
                                                                "eval_max_sentences": 50, "log_every": 2,
                                                                "checkpoint_every": 1000, "eval_every": 1000},
                       run_train={"mim-2": {"max_steps": 4}})
    log = tmp_path / "runs" / "ae-2-s0.log"
    p = subprocess.Popen([sys.executable, "-m", "sentencemim.cli", "reproduce", str(cfg), "--parallel", "2",
                          "--no-eval"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and "train |" in log.read_text()):
        time.sleep(0.5)
    child = subprocess.run(["pgrep", "-f", "--", "--only ae-2-s0 "], capture_output=True, text=True).stdout.split()
    os.kill(int(child[0]), signal.SIGINT)
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 130, out
    assert "[mim-2-s0] finished" in out and "[ae-2-s0] interrupted after" in out and "FAILED" not in out, out
    assert "1 run(s) interrupted at a checkpoint: ae-2-s0; run the same command again to resume" in out


def test_earliest_lr_stop_replays_the_schedule():
    """The progress page's earliest lr stop: train.py's rule (x lr_decay after `patience` epoch
    ends without improvement, the count reset by a decay) carried on with no improvement."""
    from sentencemim.config import TrainConfig
    from sentencemim.reproduce.progress import earliest_stop
    tc = TrainConfig(lr=1e-3, lr_decay=0.25, patience=2, min_lr=1e-6)

    def v(epoch, loss, lr, step=None):
        return {"epoch": epoch, "step": step if step is not None else 100 * epoch, "loss": loss, "lr": lr}

    assert earliest_stop([v(0, 9.0, 1e-3, 0)], tc) is None  # no epoch end yet
    assert earliest_stop([v(0, 9.0, 1e-3, 0), v(0, 8.0, 1e-3, 50)], tc) is None  # a mid-epoch validation
    # improving at epoch 3: 5 decays (1e-3 -> 9.8e-7) of 2 epochs each
    assert earliest_stop([v(1, 5.0, 1e-3), v(2, 4.0, 1e-3), v(3, 3.0, 1e-3)], tc) == 3 + 10
    # one bad epoch already: the first decay comes one epoch sooner; a later validation within
    # the same epoch (eval_every) is not an epoch end
    assert earliest_stop([v(1, 5.0, 1e-3), v(2, 6.0, 1e-3), v(2, 1.0, 1e-3, 250)], tc) == 2 + 1 + 8
    # just decayed (count reset) to 6.25e-5: 3 decays left
    assert earliest_stop([v(1, 5.0, 1e-3), v(2, 6.0, 1e-3), v(3, 6.0, 2.5e-4), v(4, 7.0, 2.5e-4),
                          v(5, 7.0, 6.25e-5)], tc) == 5 + 2 + 4
    assert earliest_stop([v(1, 5.0, 9e-7)], tc) == 1  # already below min_lr: stops at this epoch end


def test_progress_page_while_runs_train(tmp_path, capsys):
    """--progress-page: state, step, epochs, best validation and per-epoch validation of each run,
    from the run directories alone (a run not started yet is listed as new)."""
    cfg = write_config(tmp_path, variants=["mim", "ae"],
                       train={"max_steps": 6, "batch_size": 50, "eval_max_sentences": 50, "log_every": 2,
                              "checkpoint_every": 2, "eval_every": 3})
    assert main(["reproduce", str(cfg), "--only", "mim-2", "--no-eval", "--quiet"]) == 0
    page = tmp_path / "docs" / "progress.md"
    assert main(["reproduce", str(cfg), "--progress-page", str(page)]) == 0
    text = page.read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["mim-2-s0"][1:3] == ["done", "6"] and rows["ae-2-s0"][1:3] == ["new", "0"]
    assert "### mim-2-s0" in text and "| 0 | 3 |" in text and "| 0 | 6 |" in text  # validations at steps 3 and 6
    assert (tmp_path / "docs" / "progress" / "curves.png").exists()
    data = json.loads((tmp_path / "docs" / "progress" / "progress.json").read_text())
    assert data["mim-2-s0"]["step"] == 6 and data["ae-2-s0"]["status"] == "new"


def test_rechoose_heldout_applies_the_khat_fix_to_kept_evaluations(tmp_path, capsys):
    """benchmarks/reproduce/rechoose_heldout.py: a kept validation k-hat of NaN (K = 100) was a
    tail fit that overflowed, now +inf: the choice moves to q where q has the lowest score among
    methods that all fail the k-hat filter, using q's kept test values (the q-only IWAE's own
    samples); where the rule picks the method already reported, nothing changes."""
    import importlib.util
    import numpy as np
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("rechoose", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / "reproduce" / "rechoose_heldout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    q_vals, fit_vals, tokens = rng.normal(10, 1, 4), rng.normal(11, 1, 4), np.array([3, 4, 5, 6, 7, 8])
    sub = "; on 4 of 6 sentences (seed 0)"

    def method(vals, score, kh, settings):
        return {"nll_per_sentence": float(vals.mean()), "valid_score": score, "valid_khat_median": kh,
                "valid_nll_per_sentence": score - 0.5, "samples": "K=100", "settings": settings, "k": 100,
                "ess_mean": 9.0, "ess_median": 8.0, "ess_min": 1.0, "khat_median": 0.8, "khat_share_above_0.7": 0.6,
                "convergence": {"1": 12.0, "100": float(vals.mean())}, "convergence_what": "mean bound over the first K"}

    def report(fit_khat):
        b = {"bound": "tightest (fitted)", "prior": "N(0,I)", "samples": "K=100" + sub, "k": 100, "method": "fitted",
             "nll_per_sentence": float(fit_vals.mean()), "what": "tightest (fitted) ...; the method with the lowest bound",
             "methods": {"q": method(q_vals, 107.1, 0.77, "q(z|x)"), "fitted": method(fit_vals, 108.8, fit_khat, "fit")},
             "validation_only": {"prior": {"valid_score": 107.3, "valid_khat_median": 0.87}},
             "ais_subset": {"sentences": 2}, "sentences": 4}
        return {"heldout": b}
    rep = {"step": 7, "report": report(float("nan"))}
    js = tmp_path / "analysis.json"
    js.write_text(json.dumps(rep))
    written = js.read_text()
    np.savez_compressed(tmp_path / "analysis.npz", ps_tokens=tokens, ps_bound_index=np.array([0, 2, 3, 5]),
                        ps_iwae=q_vals, ps_heldout=fit_vals)
    assert mod.main([str(tmp_path), "--dry-run"]) == 0
    assert js.read_text() == written  # a dry run writes nothing
    assert mod.main([str(js)]) == 0
    assert "heldout: fitted (" in capsys.readouterr().out
    b = json.loads(js.read_text())["report"]["heldout"]
    assert b["method"] == "q" and b["nll_per_sentence"] == pytest.approx(q_vals.mean())
    assert b["settings"] == "q(z|x)" and b["samples"] == "K=100" + sub and b["ais_subset"] == {"sentences": 2}
    assert b["rechosen"]["was"] == "fitted" and b["rechosen"]["was_nll_per_sentence"] == pytest.approx(fit_vals.mean())
    assert b["ppl_words_eos"] == pytest.approx(np.exp(q_vals.sum() / tokens[[0, 2, 3, 5]].sum()))
    assert np.allclose(np.load(tmp_path / "analysis.npz")["ps_heldout"], q_vals)
    # a fitted tail (k-hat 0.5 passes the filter): the evaluation's choice stands
    kept = report(0.5)
    assert mod.rechoose(kept, {"iwae": q_vals, "tokens": tokens}) == ["heldout: fitted stays"]
    assert kept["heldout"]["method"] == "fitted"
    from sentencemim.reproduce.heldout_tables import _rechosen
    assert _rechosen(b).startswith(" (re-chosen; the evaluation had chosen fitted, ")
