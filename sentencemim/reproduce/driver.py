"""Training and evaluating the runs of a reproduction matrix: one after another in this
process, or `--parallel N` at once as child processes (several runs sharing one GPU, or
N CPU processes with the cores split between them)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError
from .plan import Run, commit, machine, read_json, train_command, train_state, utc

# ---------------------------------------------------------------------- train / evaluate one run
def snapshot_external(run: Run) -> None:
    """Copy another run's checkpoint (with vocab and config) into run.out, once."""
    which = run.external.get("checkpoint", "best")
    src = Path(run.external["path"])
    dst = run.out / f"checkpoint-{which}.pt"
    if dst.exists():
        return
    if not (src / f"checkpoint-{which}.pt").exists():
        raise UserError(f"external run {run.name}: no {src}/checkpoint-{which}.pt")
    run.out.mkdir(parents=True, exist_ok=True)
    for f in ("vocab.json", "config.json"):
        shutil.copy2(src / f, run.out / f)
    tmp = run.out / f".{dst.name}.tmp"
    shutil.copy2(src / f"checkpoint-{which}.pt", tmp)  # the source writes atomically (os.replace)
    tmp.replace(dst)
    from .. import checkpoint
    step = checkpoint.load(dst)["state"]["step"]
    # training time of the source run: as the config states it (e.g. summed from its log, when
    # the run was paused between sessions), else from its file times (config.json is written
    # at the start)
    wall = run.external.get("wall_s")
    wall_from = run.external.get("wall_from", "stated in the config")
    if wall is None:
        wall = (src / f"checkpoint-{which}.pt").stat().st_mtime - (src / "config.json").stat().st_mtime
        wall_from = "from its file times"
    (run.out / "reproduce.json").write_text(json.dumps({"external": {
        "source": str(src), "checkpoint": which, "step": step, "copied": utc(), "wall_s": wall,
        "wall_from": wall_from},
        "sessions": []}, indent=1))
    print(f"[{run.name}] snapshot of {src}/checkpoint-{which}.pt at step {step}", flush=True)


def _close_killed(rec: dict, run: Run, step: int) -> None:
    """A session still marked running was killed with its driver (a hard stop at a session
    end, a lost machine): it ended at its last checkpoint, `step`, which is where the next
    session resumes; the work after that checkpoint was lost with it."""
    ck = run.out / "checkpoint-latest.pt"
    for s in rec["sessions"]:
        if s.get("status") == "running":
            end = ck.stat().st_mtime if ck.exists() else s["started_unix"]
            s.update(status="killed", ended=utc(end), wall_s=max(0.0, end - s["started_unix"]), step_to=step,
                     note="the driver was killed; the session is counted up to its last checkpoint (step_to, "
                          "ended: that checkpoint's time)")


def train_run(run: Run, quiet: bool) -> dict:
    """Train (or resume) one run, recording the session in RUN/reproduce.json. Everything here
    happens under the run's lock: a second process that reaches a run another one is training
    (a driver beside a hand-started run) stops with the lock's one-line error before it reads
    the run's state, and so neither clears the folder of a run in its first steps nor leaves a
    session record that the other then closes as its own (both happened before the lock was
    taken first: 2026-12-01, sVAE (16))."""
    from ..rundir import RunLock
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun's other ranks: no lock, no clearing, no records
        return _train_run(run, quiet, None)
    lock = RunLock(run.out).acquire()
    try:
        return _train_run(run, quiet, lock)
    finally:
        lock.release()


def _clear_folder(out, keep: str) -> None:
    for p in out.iterdir():
        if p.name != keep:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _train_run(run: Run, quiet: bool, lock) -> dict:
    from ..rundir import LOCK, write_atomic
    from ..train import train
    status, step = train_state(run)
    if status == "done":
        return {"status": "finished", "step": step, "skipped": True}
    if status == "new" and run.out.exists() and lock:  # killed before its first checkpoint: start again
        _clear_folder(run.out, keep=LOCK)  # not the lock file: it is what we hold
        lock.created = True  # a run that then fails at once leaves no folder behind, as before
    resume = status == "partial"
    command = train_command(run, resume)
    print(f"[{run.name}] {'resuming at step ' + str(step) if resume else 'training'}: {command}", flush=True)
    t0, started = time.monotonic(), utc()
    rec_path = run.out / "reproduce.json"
    session = {"started": started, "started_unix": time.time(), "status": "running", "step_from": step,
               "command": command, "commit": commit(), "machine": machine()}
    if resume and lock:  # recorded now, so that a driver killed mid-session still leaves its record
        rec = read_json(rec_path, {"sessions": []})
        _close_killed(rec, run, step)
        rec["sessions"].append(session)
        write_atomic(rec_path, json.dumps(rec, indent=1))
    overrides = {k: getattr(run.tc, k) for k in ("max_steps", "max_epochs", "device", "data_dir")
                 if getattr(run.tc, k) is not None}  # data_dir null: the run keeps the folder it recorded
    res = train(run.mc, run.tc, run.out, resume=resume, overrides=overrides, quiet=quiet, held_lock=lock)
    if not lock:
        return res
    rec = read_json(rec_path, {"sessions": []})
    if not (rec["sessions"] and rec["sessions"][-1].get("status") == "running"):
        rec["sessions"].append(session)
    rec["sessions"][-1].update(ended=utc(), wall_s=time.monotonic() - t0, step_to=res["step"], status=res["status"])
    write_atomic(rec_path, json.dumps(rec, indent=1))
    return res


def _jsonable(x):
    import numpy as np
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def eval_settings(cfg: dict, device: str | None):
    from ..config import ReportConfig, from_dict
    from ..eval.scoring import check_precision
    ec = dict(cfg.get("evaluate", {}))
    if device:
        ec["device"] = device
    which = ec.pop("checkpoint", "best")
    rc = from_dict(ReportConfig, ec, f"{cfg.get('_path', 'config')}: evaluate.")
    rc.validate()
    check_precision(rc.precision, rc.device)
    return rc, which


def heldout_settings(cfg: dict, run: Run | None = None):
    """The config's `heldout` section (eval.heldout: proposals, AIS), with `run`'s own
    `run_heldout` settings (by VARIANT-D, then NAME) over it; checked."""
    from ..config import HeldoutConfig, from_dict
    own = cfg.get("run_heldout", {})
    merged = {**cfg.get("heldout", {}), **(own.get(run.key, {}) if run else {}), **(own.get(run.name, {}) if run else {})}
    ho = from_dict(HeldoutConfig, merged, f"{cfg.get('_path', 'config')}: heldout.")
    ho.validate()
    return ho


def evaluate_run(run: Run, cfg: dict, device: str | None, data_dir: str | None) -> dict:
    """report.analyse_run on the run's checkpoint; reuses an analysis of the same step and settings."""
    import numpy as np
    from ..corpora import load_eval_split
    from ..eval.stages import Stages, fingerprint
    from ..modelio import load_model
    from ..report import analyse_run
    rc, which = eval_settings(cfg, device)
    if isinstance(which, dict):  # {"default": "best", "vae-kl-16": "latest", ...}: by run name, then VARIANT-D
        which = which.get(run.name, which.get(run.key, which.get("default", "best")))
    if run.external:
        which = run.external.get("checkpoint", "best")
    # gradient_precision stays as configured ("auto") in the settings and the stage key, like the device:
    # it steers only, so it changes no expected number, and a key that resolved it would throw away
    # hours of kept stages when an evaluation resumes on a CPU with other bf16 support; each bound's
    # settings text says which gradient steered it
    heldout = heldout_settings(cfg, run)
    settings = {**asdict(rc), "device": None, "checkpoint": which,  # the device does not change the numbers
                **({"heldout": asdict(heldout)} if "heldout" in cfg or "run_heldout" in cfg else {})}
    model, vocab, info = load_model(run.out, which, rc.device)
    old = read_json(run.out / "analysis.json", None)
    if old and old.get("step") == info.get("step") and old.get("settings") == settings \
            and (run.out / "analysis.npz").exists():
        print(f"[{run.name}] evaluation of step {info.get('step')} exists: skipped", flush=True)
        return old
    t0 = time.monotonic()
    ddir = data_dir or cfg.get("data_dir")
    ds = load_eval_split(run.out, info, rc.split, ddir, rc.max_sentences, vocab)
    train_ds, valid = None, (None, "")
    if model.has_latent:
        train_ds = load_eval_split(run.out, info, "train", ddir, 0, vocab) if rc.iwae_k and rc.agg_prior_m else None
        if rc.iwae_k and heldout.method_list():  # settings of the held-out methods are chosen on these
            source = "train" if rc.split == "valid" else "valid"
            vds = load_eval_split(run.out, info, source, ddir, heldout.heldout_valid, vocab)
            valid = (vds, f"{len(vds)} {source} sentences (seed 0)")
    # finished stages are kept until analysis.json is written: a killed evaluation resumes
    # (the language model's exact NLL is one quick pass: nothing to keep)
    stages = Stages(run.out / "analysis-stages", {
        "step": info.get("step"), "settings": settings,
        "model_and_sentences": fingerprint(model, ds, valid[0], train_ds)}) if model.has_latent else Stages()
    kept = stages.kept()
    print(f"[{run.name}] evaluating checkpoint-{which} (step {info.get('step')}) on {rc.split}"
          + (f"; resuming: {len(kept)} stage(s) already done ({', '.join(kept)})" if kept else ""), flush=True)
    if model.has_latent:
        res = analyse_run(run.name, model, vocab, info, ds, train_ds, rc, heldout=heldout, valid=valid,
                          stages=stages)
    else:  # the language model: its exact NLL, nothing latent to analyse
        from ..eval.evaluate import evaluate
        res = {"name": run.name, "objective": "lm", "latent_dim": 0, "hidden_dim": model.cfg.hidden_dim,
               "corpus": info.get("train", {}).get("corpus"), "step": info.get("step"), "cross": {},
               "report": evaluate(model, ds, vocab, batch_size=rc.batch_size, device=rc.device, progress=True,
                                  precision=rc.precision)}
    per, cross = res["report"].pop("per_sentence"), res.pop("cross")
    # wall time: this process's, plus what the stages read back took in earlier ones
    res.update(settings=settings, checkpoint=which, wall_s=time.monotonic() - t0 + stages.resumed_seconds(),
               evaluated=utc(), commit=commit(), machine=machine(), label=run.label, key=run.key, seed=run.seed)
    if stages.resumed:
        res["resumed_stages"] = {n: stages.seconds[n] for n in stages.resumed}
    np.savez_compressed(run.out / "analysis.npz", **{f"ps_{k}": v for k, v in per.items()},
                        **{f"cross_{k}": v for k, v in cross.items()})
    (run.out / "analysis.json").write_text(json.dumps(res, indent=1, default=_jsonable))
    stages.clear()
    return res


def load_analysis(run: Run) -> dict | None:
    import numpy as np
    res = read_json(run.out / "analysis.json", None)
    if res is None or not (run.out / "analysis.npz").exists():
        return None
    arrays = np.load(run.out / "analysis.npz")
    res["report"]["per_sentence"] = {k[3:]: arrays[k] for k in arrays.files if k.startswith("ps_")}
    res["cross"] = {k[6:]: arrays[k] for k in arrays.files if k.startswith("cross_")}
    return res


# ---------------------------------------------------------------------- driver
def _fmt_s(s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, s)))


def _target_steps(run: Run, steps_per_epoch: int | None) -> int | None:
    by_epochs = run.tc.max_epochs * steps_per_epoch if steps_per_epoch else None
    if run.tc.max_steps:
        return min(run.tc.max_steps, by_epochs) if by_epochs else run.tc.max_steps
    return by_epochs


def summary(rep: dict) -> str:
    """One line of an evaluation's headline numbers, each named."""
    if rep.get("language_model"):
        return f"exact NLL {rep['exact']['nll_per_sentence']:.2f} nats/sentence [words+<eos>]"
    b = rep.get("bleu", {})
    return (f"MELBO {rep['melbo']['nll_per_sentence']:.2f} nats [words+<eos>, not held out], "
            f"KL {rep['kl']['mean']:.2f}, BLEU {b.get('sentence_bleu1', float('nan')):.3f} "
            f"[sentence BLEU-1, z ~ q, sampling T=1]")


def drive(cfg: dict, runs: list[Run], device, data_dir, quiet, do_eval=True, do_train=True) -> int:
    todo = []
    for r in runs:
        status, step = train_state(r)
        todo.append((r, status, step))
        print(f"  {r.name:<16} {status:<8} step {step}", flush=True)
    spe = None  # steps per epoch, known after a run has started
    sec_per_step, eval_s = [], []
    for i, (r, status, step0) in enumerate(todo):
        t0 = time.monotonic()
        if r.external:
            snapshot_external(r)
            res = {"status": "finished"}
        elif not do_train:  # --eval-only: whatever checkpoint the run has reached
            if status == "new":
                print(f"[{r.name}] not started: nothing to evaluate", flush=True)
                continue
        else:
            res = train_run(r, quiet)
            if res["status"] == "interrupted":
                print(f"[{r.name}] interrupted at step {res['step']}; run the same command again to resume",
                      flush=True)
                return 128 + int(res["signal"])
            if not res.get("skipped") and res["step"] > step0:
                sec_per_step.append((time.monotonic() - t0) / (res["step"] - step0))
            start = [json.loads(line) for line in (r.out / "metrics.jsonl").read_text().splitlines()[:1]]
            if start and "train_sentences" in start[0]:
                spe = start[0]["train_sentences"] // r.tc.batch_size
        if do_eval:
            t1 = time.monotonic()
            try:
                a = evaluate_run(r, cfg, device, data_dir)
            except KeyboardInterrupt as e:  # SIGINT / SIGTERM (cli.Interrupted): the finished stages are on disk
                from ..eval.stages import kept_stages
                folder = r.out / "analysis-stages"
                kept = kept_stages(folder)
                print(f"[{r.name}] interrupted during its evaluation ("
                      + (f"{len(kept)} finished stage(s) kept in {folder}" if kept else "no finished stage kept")
                      + "); run the same command again to resume", flush=True)
                return 128 + int(getattr(e, "signum", signal.SIGINT))
            if time.monotonic() - t1 > 1.0:
                eval_s.append(time.monotonic() - t1)
            print(f"[{r.name}] step {a['step']}: {summary(a['report'])}", flush=True)
        # ETA: remaining steps at the mean measured speed, plus the mean evaluation time
        left = todo[i + 1:]
        rest_steps = sum(max(0, (_target_steps(x, spe) or 0) - s) for x, st, s in left
                         if not x.external and st != "done" and do_train)
        eta = (sum(sec_per_step) / len(sec_per_step) * rest_steps if sec_per_step else
               0.0 if not rest_steps else math.nan) + \
              (sum(eval_s) / len(eval_s) * len(left) if eval_s and do_eval else 0.0)
        print(f"== {i + 1}/{len(todo)} runs done; ETA for the rest: "
              f"{'unknown (no speed measured yet)' if math.isnan(eta) else _fmt_s(eta)}", flush=True)
    return 0


def drive_parallel(cfg: dict, runs: list[Run], n: int, passthrough: list[str], device: str | None,
                   poll_s: float = 2.0) -> int:
    """Train and evaluate `runs` as up to `n` child processes at once, each
    `smim reproduce CONFIG --only NAME --no-report ...` (so each one resumes, skips and records
    exactly as a serial run does). Its output, progress lines with ETAs included, goes to
    RUNS_DIR/NAME.log (`tail -f` it to watch a run). On a CPU the cores are
    split: each child gets OMP_NUM_THREADS = max(1, cores // n); on a GPU the children share the
    device. Ctrl-C / SIGTERM is passed on to the children, which checkpoint and stop."""
    cpu = not (device or "").startswith("cuda") and device != "auto"
    threads = max(1, (os.cpu_count() or 1) // n)
    pending, active, failed, interrupted, t0 = list(runs), {}, [], [], time.monotonic()
    stop = []
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"{len(runs)} run(s), up to {n} at once" + (f", {threads} CPU thread(s) each" if cpu else
                                                       f" on device {device or 'auto'}"), flush=True)
    try:
        while pending or active:
            while pending and len(active) < n and not stop:
                r = pending.pop(0)
                r.out.parent.mkdir(parents=True, exist_ok=True)
                log = r.out.parent / f"{r.name}.log"
                argv = [sys.executable, "-m", "sentencemim.cli", "reproduce", cfg["_path"], "--only", r.name,
                        "--no-report", *passthrough] + (["--threads", str(threads)] if cpu else [])
                env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                                        if cpu else {})}
                f = open(log, "a")
                f.write(f"\n# {utc()}: {' '.join(argv[1:])}\n")
                f.flush()
                active[r.name] = (subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env), f, log,
                                  time.monotonic())
                print(f"[{r.name}] started (log {log})", flush=True)
            if stop:
                for p, *_ in active.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                pending.clear()
            time.sleep(poll_s if active else 0)
            for name, (p, f, log, t1) in list(active.items()):
                rc = p.poll()
                if rc is None:
                    continue
                f.close()
                del active[name]
                done = len(runs) - len(pending) - len(active)
                tail = ""
                lines = Path(log).read_text(errors="replace").strip().splitlines() if rc else []
                # a child stopped by a signal (our Ctrl-C / SIGTERM, or one sent to it alone)
                # checkpoints and says so: that is no failure
                # (or, when we are stopping them all, one that died of the signal itself or said
                # only "interrupted": a child whose code predates that line, or hit twice)
                stopped = bool(rc and (lines and lines[-1].startswith(f"[{name}] interrupted ")
                                       or stop and rc in (130, 143, -signal.SIGINT, -signal.SIGTERM)))
                if rc and not stopped:
                    failed.append(name)
                elif stopped and not stop:
                    interrupted.append(name)
                if rc:
                    tail = f"; last line: {lines[-1] if lines else '(empty log)'}"
                state = "finished" if rc == 0 else "interrupted" if stopped else f"FAILED (status {rc})"
                print(f"[{name}] {state} after "
                      f"{_fmt_s(time.monotonic() - t1)}; {done}/{len(runs)} done, {len(active)} running, "
                      f"{_fmt_s(time.monotonic() - t0)} elapsed{tail}", flush=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        print("interrupted: the runs were checkpointed; run the same command again to resume", flush=True)
        return 128 + int(stop[0])
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their .log files in "
                        f"{runs[0].out.parent})")
    if interrupted:
        print(f"{len(interrupted)} run(s) interrupted at a checkpoint: {', '.join(interrupted)}; run the same "
              "command again to resume", flush=True)
        return 130
    return 0
