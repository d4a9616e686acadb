"""`smim reproduce CONFIG`: train and evaluate a matrix of runs from one config file,
then write a results page (issue #5, the paper's Tables 2, 6, 7 and Figs. 3, 5, 6).

    smim reproduce benchmarks/reproduce/ptb.json                  # everything, unattended
    smim reproduce CONFIG --only mim-16,vae-16 --max-steps 500    # a subset, fewer steps
    smim reproduce CONFIG --device cuda                           # on a GPU
    smim reproduce CONFIG --report-only                           # re-create the page
    smim reproduce CONFIG --latent-only                           # the Tables 11-20 page

The matrix is variants x latent_dims x seeds; a run is named VARIANT-D-sSEED
(`--only mim-16` picks every seed of mim-16). Variants: mim, vae, vae-kl (logistic KL
annealing), ae. Each run lives in RUNS_DIR/NAME:

    NAME/                 an ordinary `smim train` run directory (resumable)
    NAME/reproduce.json   one record per training session (steps, wall time, commit, command)
    NAME/analysis.json    the evaluation (report.analyse_run), arrays in analysis.npz

A run whose checkpoint has reached max_steps / max_epochs is skipped, a started one is
resumed (exactly, see train.py), a finished evaluation of the same checkpoint step with
the same settings is reused. `external` runs are someone else's run directories: the
driver copies the chosen checkpoint once into RUNS_DIR/NAME (a snapshot, never trained)
and evaluates the copy. Config keys (JSON, or TOML read with tomllib):

    name, corpus, data_dir, preset, runs_dir, model{}, train{}, variants[], latent_dims[],
    seeds[], exclude[], only[], external{NAME: {path, checkpoint[, wall_s, wall_from]}}, evaluate{ReportConfig},
    report{page, figures, title, machine, notes[], commands[], paper{NAME: {...}}, paper_tables, main_table,
           references{title, text, rows[{name, ppl, nll, note}]}}, latent{...}
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import PRESETS, ModelConfig, TrainConfig, to_dict
from .errors import UserError

VARIANTS = {  # name -> (TrainConfig settings, label as in the paper's tables)
    "mim": ({"objective": "mim"}, "sMIM ({d})"),
    "vae": ({"objective": "vae"}, "sVAE ({d})"),
    "vae-kl": ({"objective": "vae", "kl_annealing": "logistic"}, "sVAE ({d}) + kl"),
    "ae": ({"objective": "ae"}, "AE ({d})"),
}
CONFIG_KEYS = {"name", "description", "corpus", "data_dir", "preset", "runs_dir", "model", "train", "variants",
               "latent_dims", "seeds", "exclude", "only", "external", "evaluate", "report", "latent"}


@dataclass
class Run:
    name: str  # VARIANT-D-sSEED
    variant: str
    latent_dim: int
    seed: int
    out: Path
    mc: ModelConfig | None = None
    tc: TrainConfig | None = None
    external: dict | None = None  # {"path": ..., "checkpoint": "best" | "latest"}
    preset: str | None = None

    @property
    def key(self) -> str:  # VARIANT-D, the key of the paper's numbers
        return f"{self.variant}-{self.latent_dim}"

    @property
    def label(self) -> str:
        return VARIANTS[self.variant][1].format(d=self.latent_dim)


# ---------------------------------------------------------------------- config
def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            import tomllib
            cfg = tomllib.loads(path.read_text())
        else:
            cfg = json.loads(path.read_text())
    except (ValueError, ImportError) as e:
        raise UserError(f"{path}: not a readable config ({e})") from None
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    for v in cfg.get("variants", []):
        if v not in VARIANTS:
            raise UserError(f"{path}: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if cfg.get("preset", "ptb") not in PRESETS:
        raise UserError(f"{path}: unknown preset {cfg['preset']!r}")
    cfg["_path"] = str(path)
    return cfg


def plan(cfg: dict, only=None, overrides: dict | None = None, runs_dir=None) -> list[Run]:
    """The matrix in order (latent dim, then variant, then seed), less `exclude`, limited to
    `only` (names or VARIANT-D prefixes), with CLI overrides of the train config."""
    from .config import from_dict
    root = Path(runs_dir or cfg.get("runs_dir", "runs/reproduce"))
    preset = PRESETS[cfg.get("preset", "ptb")]
    external = cfg.get("external", {})
    runs = []
    for d in cfg.get("latent_dims", [16]):
        for v in cfg.get("variants", ["mim"]):
            for s in cfg.get("seeds", [0]):
                key, name = f"{v}-{d}", f"{v}-{d}-s{s}"
                if key in cfg.get("exclude", []) or name in cfg.get("exclude", []):
                    continue
                ext = external.get(key) or external.get(name)
                train = {**preset["train"], **cfg.get("train", {}), **VARIANTS[v][0], "seed": s,
                         "corpus": cfg.get("corpus", "ptb"), "data_dir": cfg.get("data_dir"),
                         **(overrides or {})}
                mc = from_dict(ModelConfig, {**preset["model"], **cfg.get("model", {}), "latent_dim": d})
                tc = from_dict(TrainConfig, train)
                tc.validate()
                runs.append(Run(name, v, d, s, root / name, mc, tc, ext, cfg.get("preset", "ptb")))
    only = only if only is not None else cfg.get("only")
    if only:
        wanted = set(only)
        unknown = wanted - {r.name for r in runs} - {r.key for r in runs}
        if unknown:
            raise UserError(f"--only: no run named {', '.join(sorted(unknown))} in the matrix "
                            f"({', '.join(r.name for r in runs)})")
        runs = [r for r in runs if r.name in wanted or r.key in wanted]
    return runs


def train_command(run: Run, resume: bool) -> str:
    """The `smim train` command line equivalent to what the driver does for `run`."""
    base_m, base_t = ModelConfig(), TrainConfig()
    pm, pt = PRESETS[run.preset]["model"], PRESETS[run.preset]["train"]
    args = ["smim", "train", "--preset", run.preset]
    for cfg, base, pre in ((run.mc, base_m, pm), (run.tc, base_t, pt)):
        for f in fields(cfg):
            v = getattr(cfg, f.name)
            if f.name in ("vocab_size", "pad_id", "unk_id", "sos_id", "eos_id"):
                continue
            if v != pre.get(f.name, getattr(base, f.name)) or f.name in ("corpus", "objective", "latent_dim", "seed"):
                if v is not None:
                    args += ["--" + f.name.replace("_", "-"), str(v)]
    args += ["--out", str(run.out)] + (["--resume"] if resume else [])
    return " ".join(args)


# ---------------------------------------------------------------------- state of a run
def train_state(run: Run) -> tuple[str, int]:
    """('new' | 'partial' | 'done' | 'external', step)."""
    from . import checkpoint
    if run.external:
        snap = run.out / f"checkpoint-{run.external.get('checkpoint', 'best')}.pt"
        return ("external", checkpoint.load(snap)["state"]["step"]) if snap.exists() else ("external", -1)
    ck = run.out / "checkpoint-latest.pt"
    if not ck.exists():
        return "new", 0
    st = checkpoint.load(ck)["state"]
    done = st["done"] or (run.tc.max_steps and st["step"] >= run.tc.max_steps) or st["epoch"] >= run.tc.max_epochs
    return ("done" if done else "partial"), st["step"]


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The commit of the code this process runs: read once, at its first use (the start of
    `cmd_reproduce`), because
    HEAD may move while a long matrix trains."""
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "sentencemim"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    import os
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} threads {torch.get_num_threads()}, {gpu}"


def _utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


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
    from . import checkpoint
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
        "source": str(src), "checkpoint": which, "step": step, "copied": _utc(), "wall_s": wall,
        "wall_from": wall_from},
        "sessions": []}, indent=1))
    print(f"[{run.name}] snapshot of {src}/checkpoint-{which}.pt at step {step}", flush=True)


def train_run(run: Run, quiet: bool) -> dict:
    from .train import train
    status, step = train_state(run)
    if status == "done":
        return {"status": "finished", "step": step, "skipped": True}
    if status == "new" and run.out.exists():  # killed before its first checkpoint: start again
        shutil.rmtree(run.out)
    resume = status == "partial"
    command = train_command(run, resume)
    print(f"[{run.name}] {'resuming at step ' + str(step) if resume else 'training'}: {command}", flush=True)
    t0, started = time.monotonic(), _utc()
    overrides = {k: getattr(run.tc, k) for k in ("max_steps", "max_epochs", "device", "data_dir")}
    res = train(run.mc, run.tc, run.out, resume=resume, overrides=overrides, quiet=quiet)
    rec_path = run.out / "reproduce.json"
    rec = _read_json(rec_path, {"sessions": []})
    rec["sessions"].append({"started": started, "ended": _utc(), "wall_s": time.monotonic() - t0,
                            "step_from": step, "step_to": res["step"], "status": res["status"],
                            "command": command, "commit": _commit(), "machine": machine()})
    rec_path.write_text(json.dumps(rec, indent=1))
    return res


def _jsonable(x):
    import numpy as np
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def eval_settings(cfg: dict, device: str | None):
    from .report import ReportConfig
    ec = dict(cfg.get("evaluate", {}))
    if device:
        ec["device"] = device
    unknown = set(ec) - {f.name for f in fields(ReportConfig)} - {"checkpoint"}
    if unknown:
        raise UserError(f"unknown evaluate key(s): {', '.join(sorted(unknown))}")
    which = ec.pop("checkpoint", "best")
    rc = ReportConfig(**ec)
    rc.validate()
    return rc, which


def evaluate_run(run: Run, cfg: dict, device: str | None, data_dir: str | None) -> dict:
    """report.analyse_run on the run's checkpoint; reuses an analysis of the same step and settings."""
    import numpy as np
    from .cli import _load_eval_split
    from .modelio import load_model
    from .report import analyse_run
    rc, which = eval_settings(cfg, device)
    if isinstance(which, dict):  # {"default": "best", "vae-kl-16": "latest", ...}: by run name, then VARIANT-D
        which = which.get(run.name, which.get(run.key, which.get("default", "best")))
    if run.external:
        which = run.external.get("checkpoint", "best")
    settings = {**asdict(rc), "device": None, "checkpoint": which}  # the device does not change the numbers
    model, vocab, info = load_model(run.out, which, rc.device)
    old = _read_json(run.out / "analysis.json", None)
    if old and old.get("step") == info.get("step") and old.get("settings") == settings \
            and (run.out / "analysis.npz").exists():
        print(f"[{run.name}] evaluation of step {info.get('step')} exists: skipped", flush=True)
        return old
    print(f"[{run.name}] evaluating checkpoint-{which} (step {info.get('step')}) on {rc.split}", flush=True)
    t0 = time.monotonic()
    ddir = data_dir or cfg.get("data_dir")
    ds = _load_eval_split(run.out, info, rc.split, ddir, rc.max_sentences, vocab)
    train_ds = _load_eval_split(run.out, info, "train", ddir, 0, vocab) if rc.iwae_k and rc.agg_prior_m else None
    res = analyse_run(run.name, model, vocab, info, ds, train_ds, rc)
    per, cross = res["report"].pop("per_sentence"), res.pop("cross")
    res.update(settings=settings, checkpoint=which, wall_s=time.monotonic() - t0, evaluated=_utc(),
               commit=_commit(), machine=machine(), label=run.label, key=run.key, seed=run.seed)
    np.savez_compressed(run.out / "analysis.npz", **{f"ps_{k}": v for k, v in per.items()},
                        **{f"cross_{k}": v for k, v in cross.items()})
    (run.out / "analysis.json").write_text(json.dumps(res, indent=1, default=_jsonable))
    return res


def load_analysis(run: Run) -> dict | None:
    import numpy as np
    res = _read_json(run.out / "analysis.json", None)
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


def drive(cfg: dict, runs: list[Run], device, data_dir, quiet, do_eval=True) -> int:
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
            a = evaluate_run(r, cfg, device, data_dir)
            if time.monotonic() - t1 > 1.0:
                eval_s.append(time.monotonic() - t1)
            m = a["report"]["melbo"]
            print(f"[{r.name}] step {a['step']}: MELBO {m['nll_per_sentence']:.2f} nats, "
                  f"KL {a['report']['kl']['mean']:.2f}, "
                  f"BLEU {a['report'].get('bleu', {}).get('sentence_bleu1', float('nan')):.3f}", flush=True)
        # ETA: remaining steps at the mean measured speed, plus the mean evaluation time
        left = todo[i + 1:]
        rest_steps = sum(max(0, (_target_steps(x, spe) or 0) - s) for x, st, s in left
                         if not x.external and st != "done")
        eta = (sum(sec_per_step) / len(sec_per_step) * rest_steps if sec_per_step else
               0.0 if not rest_steps else math.nan) + \
              (sum(eval_s) / len(eval_s) * len(left) if eval_s and do_eval else 0.0)
        print(f"== {i + 1}/{len(todo)} runs done; ETA for the rest: "
              f"{'unknown (no speed measured yet)' if math.isnan(eta) else _fmt_s(eta)}", flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="train + evaluate a matrix of runs from a config; write a results page",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="JSON or TOML config (benchmarks/reproduce/*.json)")
    p.add_argument("--only", help="comma-separated run names or VARIANT-D prefixes (e.g. mim-16,vae-16)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps for every run")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs for every run")
    p.add_argument("--device", help="training and evaluation device (cpu, cuda, auto)")
    p.add_argument("--data-dir", help="override data_dir")
    p.add_argument("--runs-dir", help="override runs_dir")
    p.add_argument("--threads", type=int, help="torch threads (set OMP_NUM_THREADS too)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--no-report", action="store_true", help="do not write the results page")
    p.add_argument("--report-only", action="store_true", help="only (re)write the page from finished evaluations")
    p.add_argument("--latent-only", action="store_true", help="only write the latent-table page (Tables 11-20)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the state of each run")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    import torch
    _commit()  # the code this process runs; later commits during a long matrix do not change it
    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    ov = {k: v for k, v in (("max_steps", args.max_steps), ("max_epochs", args.max_epochs),
                            ("device", args.device), ("data_dir", args.data_dir)) if v is not None}
    if args.data_dir:
        cfg["data_dir"] = args.data_dir
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA GPU here")
    runs = plan(cfg, args.only.split(",") if args.only else None, ov, args.runs_dir)
    command = "smim reproduce " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else "smim reproduce " + args.config
    print(f"{cfg.get('name', args.config)}: {len(runs)} run(s) in {runs[0].out.parent if runs else '-'}", flush=True)
    if args.dry_run:
        for r in runs:
            status, step = train_state(r)
            print(f"  {r.name:<16} {status:<8} step {step:<6} " + (f"external {r.external['path']}" if r.external
                                                                   else train_command(r, status == "partial")))
        return 0
    if args.latent_only:
        page = write_latent_page(cfg, runs, command)
        print(f"wrote {page}")
        return 0
    if not args.report_only:
        rc = drive(cfg, runs, args.device, args.data_dir, args.quiet, do_eval=not args.no_eval)
        if rc:
            return rc
    if not args.no_report and not args.no_eval:
        analyses = [(r, a) for r in runs if (a := load_analysis(r)) is not None]
        if not analyses:
            raise UserError("no finished evaluations to report")
        page = write_page(cfg, analyses, command)
        print(f"wrote {page}")
    return 0


# ---------------------------------------------------------------------- results pages
def _n(x, fmt=".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt) if abs(x) < 1e6 else format(x, ".3g")


def _paper_nll(bound: dict, rep: dict) -> float:
    """NLL/sentence in the paper's convention (the <eos> terms out of the numerator) from its PPL."""
    return math.log(bound["ppl_paper"]) * rep["tokens_words_eos"] / rep["sentences"]


_SEED_COLUMNS = (  # (heading, value from an analysis, format)
    ("MELBO PPL (paper conv.)", lambda rep: rep["melbo"]["ppl_paper"], ".2f"),
    ("BLEU (z ~ q)", lambda rep: rep.get("bleu", {}).get("sentence_bleu1"), ".3f"),
    ("KL", lambda rep: rep["kl"]["mean"], ".2f"),
    ("MI", lambda rep: rep["latent"]["mutual_information"], ".2f"),
    ("active units", lambda rep: rep["latent"]["active_units"], ".0f"),
    ("ELBO [words+<eos>]", lambda rep: rep.get("elbo", {}).get("nll_per_sentence"), ".2f"),
    ("IWAE N(0,I) [words+<eos>]", lambda rep: rep.get("iwae", {}).get("nll_per_sentence"), ".2f"),
)


def _seed_table(analyses: list) -> list[str]:
    """Mean and range over seeds of the main numbers, for every model run with more than one seed."""
    groups: dict[str, list] = {}
    for r, a in analyses:
        groups.setdefault(r.key, []).append((r, a))
    multi = {k: g for k, g in groups.items() if len(g) > 1}
    if not multi:
        return []
    L = ["", "## Seeds", "",
         "Models trained with more than one seed (same data, settings and step count; the seed sets the "
         "initialisation, batch order, dropout and sampling): mean over seeds, and [min, max].", "",
         "| model | seeds | step | " + " | ".join(h for h, _, _ in _SEED_COLUMNS) + " |",
         "|---|---|---|" + "---|" * len(_SEED_COLUMNS)]
    for g in multi.values():
        cells = []
        for _, get, fmt in _SEED_COLUMNS:
            vals = [get(a["report"]) for _, a in g]
            if any(v is None for v in vals):
                cells.append("-")
                continue
            cells.append(f"{_n(sum(vals) / len(vals), fmt)} [{_n(min(vals), fmt)}, {_n(max(vals), fmt)}]")
        steps = sorted({a["step"] for _, a in g})
        L.append(f"| {g[0][0].label} | {', '.join(str(r.seed) for r, _ in g)} | {', '.join(map(str, steps))} | "
                 + " | ".join(cells) + " |")
    return L


_HELD_OUT = ("elbo", "iwae", "iwae_train_prior", "heldout", "heldout_train_prior")


def _best_held_out(rep: dict) -> str | None:
    """The key of the lowest held-out bound in an analysis report (None if it has none)."""
    held = [k for k in _HELD_OUT if k in rep]
    return min(held, key=lambda k: rep[k]["nll_per_sentence"]) if held else None


def _reference_table(refs: dict | None, analyses: list, lab) -> list[str]:
    """The paper's reference models (e.g. its auto-regressive rows) beside every run's best held-out bound.
    `refs`: {"title", "text", "rows": [{"name", "ppl", "nll", "note"}]} from the config's report section."""
    if not refs:
        return []
    L = ["", "### " + refs.get("title", "Beside the paper's reference models"), ""]
    if refs.get("text"):
        L += [refs["text"], ""]
    L += ["| model | NLL per sentence | PPL | what bounds it |", "|---|---|---|---|"]
    for row in refs.get("rows", []):
        L.append(f"| {row['name']} (paper) | {_n(row.get('nll'))} | {_n(row.get('ppl'))} | {row.get('note', '-')} |")
    for r, a in analyses:
        rep = a["report"]
        k = _best_held_out(rep)
        if k is None:
            continue
        b = rep[k]
        L.append(f"| {lab(r)}, step {a['step']} (ours) | {_n(b['nll_per_sentence'])} | {_n(b['ppl_words_eos'])} | "
                 f"its best held-out bound: {b['bound']}, prior {b['prior']}, words + <eos> |")
    return L


def _run_facts(run: Run, a: dict) -> dict:
    """Steps, epochs, wall times and commands of a run, from its own records."""
    rec = _read_json(run.out / "reproduce.json", {"sessions": []})
    ext = rec.get("external")
    metrics = run.out / "metrics.jsonl"
    if ext and not metrics.exists():
        metrics = Path(ext["source"]) / "metrics.jsonl"
    spe = None
    if metrics.exists():
        with open(metrics) as f:
            first = json.loads(f.readline() or "{}")
        if "train_sentences" in first:
            spe = first["train_sentences"] // json.loads((run.out / "config.json").read_text())["train"]["batch_size"]
    sessions = rec["sessions"]
    return {"step": a["step"], "epochs": a["step"] / spe if spe else None, "sessions": sessions,
            "train_wall_s": sum(s["wall_s"] for s in sessions) if sessions else ext and ext.get("wall_s"),
            "external": ext, "eval_wall_s": a["wall_s"]}


def write_page(cfg: dict, analyses: list, command: str) -> Path:
    """The results page (Tables 2, 6, 7; Figs. 3, 5, 6 via report.write_report) beside the paper."""
    from .report import write_report
    rc, _ = eval_settings(cfg, None)
    rep_cfg = cfg.get("report", {})
    page = Path(rep_cfg.get("page", "docs/results/results.md"))
    figdir = Path(rep_cfg.get("figures", page.with_suffix("")))
    runs = [a for _, a in analyses]
    write_report(runs, figdir, rc, command + " (report.write_report)")
    rel = figdir.relative_to(page.parent) if figdir.is_relative_to(page.parent) else figdir
    paper = rep_cfg.get("paper", {})
    facts = [_run_facts(r, a) for r, a in analyses]
    first = runs[0]["report"]
    n_seeds = Counter(r.key for r, _ in analyses)

    def lab(r: Run) -> str:  # the paper's label, with the seed where a model has several
        return r.label + (f" s{r.seed}" if n_seeds[r.key] > 1 else "")
    L = [f"# {rep_cfg.get('title', cfg.get('name', 'Results'))}", "",
         f"Generated by `{command}` on {_utc()} from the config `{cfg['_path']}` (commit {_commit()}). "
         "Every number of ours below comes from the runs listed under *What was run*; "
         f"the paper's numbers are from its {rep_cfg.get('paper_tables', 'Tables 2, 6 and 7')}.", ""]
    if cfg.get("description"):
        L += [cfg["description"], ""]
    L += ["## What was run", "",
          f"Machine: {rep_cfg.get('machine', machine())}.", "",
          "| run | model | checkpoint evaluated | step | epochs | training wall time | evaluation wall time | "
          "trained at commit |", "|---|---|---|---|---|---|---|---|"]
    for (r, a), f in zip(analyses, facts):
        commits = sorted({s["commit"] for s in f["sessions"]}) or ["(external)"]
        ext = f["external"]
        tw = _fmt_s(f["train_wall_s"]) if f["train_wall_s"] else "-"
        if ext:
            tw += f" (another session's run {ext['source']}; {ext.get('wall_from', 'from its file times')})"
        L.append(f"| {r.name} | {r.label} | {a['checkpoint']} | {f['step']} | {_n(f['epochs'])} | {tw} | "
                 f"{_fmt_s(f['eval_wall_s'])} | {', '.join(commits)} |")
    L += ["", f"Evaluation settings (all runs): `{json.dumps({**asdict(rc), 'device': None})}`: "
          f"{first['sentences']} {rc.split} sentences"
          + (" (a fixed random subset, seed " + str(rc.seed) + ")" if rc.max_sentences else " (the whole split)")
          + f", {first['tokens_words_eos']} tokens (words + <eos>).", ""]
    if rep_cfg.get("commands"):
        L += ["Driver commands, in the order run:", "", "```", *rep_cfg["commands"], "```", ""]
    L += ["Training commands (each session, as recorded by the driver):", "", "```"]
    for (r, a), f in zip(analyses, facts):
        for s in f["sessions"]:
            L.append(f"# {r.name}: steps {s['step_from']} -> {s['step_to']}, {_fmt_s(s['wall_s'])}, {s['started']}")
            L.append(s["command"])
        if f["external"]:
            e = f["external"]
            L.append(f"# {r.name}: snapshot of {e['source']}/checkpoint-{e['checkpoint']}.pt at step {e['step']}, "
                     f"copied {e['copied']}")
    L += ["```", ""]

    # Table 2
    L += [f"## {rep_cfg.get('main_table', 'Table 2')} analogue: MELBO (paper's convention) and BLEU", "",
          "MELBO = eqn 16 with the test set's own aggregate posterior as prior (N_z = "
          f"{rc.n_z}, mean (std) over {rc.repeats} repeats). *Paper convention*: the <eos> terms are left out of "
          "the NLL numerator, while the PPL denominator counts words + <eos> (REFERENCE.md). log N = "
          f"{first['melbo']['log_N']:.2f} here (N = {first['sentences']} evaluated sentences; the paper evaluates "
          f"whole test sets, e.g. log N = {math.log(3761):.2f} for PTB's 3,761 sentences), and the MELBO of one "
          "model on test sets of different sizes can differ by up to the difference of their log N. "
          "BLEU: sentence BLEU-1 averaged, reconstruction from z ~ q(z|x), greedy decoding.", "",
          "| model | step | MELBO NLL (paper conv.) | paper NLL | MELBO PPL (paper conv.) | paper PPL | "
          "MELBO NLL [words+<eos>] | BLEU | paper BLEU |", "|---|---|---|---|---|---|---|---|---|"]
    for r, a in analyses:
        rep, p = a["report"], paper.get(r.key, {})
        m = rep["melbo"]
        std = m.get("ppl_paper_std")
        L.append(f"| {lab(r)} | {a['step']} | {_paper_nll(m, rep):.2f} | {_n(p.get('melbo_nll'))} | "
                 f"{_n(m['ppl_paper'])} ({_n(std, '.2f')}) | {_n(p.get('melbo_ppl'))} | "
                 f"{m['nll_per_sentence']:.2f} ({m['nll_per_sentence_std']:.2f}) | "
                 f"{_n(rep.get('bleu', {}).get('sentence_bleu1'), '.3f')} | {_n(p.get('bleu'), '.3f')} |")
    L += ["", "### Held-out bounds (words + <eos>)", "",
          "Upper bounds on -log p(x) that use no test data in the prior, nats per sentence with the <eos> term "
          "included (PPL = exp(NLL sum / (words + <eos>))). The paper's NLL\\* (ELBO) of sVAE is given for "
          "reference; it leaves the <eos> term out.", "",
          f"| model | rec. -log p(x\\|z) | KL | ELBO (PPL) | IWAE_{rc.iwae_k}, N(0,I) (PPL) | "
          f"IWAE_{rc.iwae_k}, training aggregate prior M={rc.agg_prior_m} (PPL) | paper ELBO NLL\\* [KL] |",
          "|---|---|---|---|---|---|---|"]
    for r, a in analyses:
        rep, p = a["report"], paper.get(r.key, {})

        def b(key):
            x = rep.get(key)
            return f"{_n(x['nll_per_sentence'])} ({_n(x['ppl_words_eos'])})" if x else "-"
        pe = f"{p['elbo_nll']} [{p.get('kl', '-')}]" if "elbo_nll" in p else "-"
        L.append(f"| {lab(r)} | {rep['reconstruction']['nll_per_sentence']:.2f} | {rep['kl']['mean']:.2f} | "
                 f"{b('elbo')} | {b('iwae')} | {b('iwae_train_prior')} | {pe} |")

    L += _reference_table(rep_cfg.get("references"), analyses, lab)

    # Table 6
    L += ["", "## Table 6 analogue: latent entropy and information", "",
          "kNN (Kozachenko-Leonenko, k=3, max-norm) entropy in nats of one z ~ q(z|x) per test sentence, and of "
          "the posterior means (the AE's code); N(d) = d/2 (1 + log 2 pi). The paper compares sMIM's z with the "
          "AE's code. MI: He et al. (2019) estimate, at most log N. The estimator reads high above ~16 dims, and "
          "entropies of different N are not comparable.", "",
          "| model | N(d) | H(z ~ q) | H(posterior mean) | paper | KL | MI | active units |",
          "|---|---|---|---|---|---|---|---|"]
    for r, a in analyses:
        lat, p = a["report"]["latent"], paper.get(r.key, {})
        L.append(f"| {lab(r)} | {lat['entropy_std_normal']:.2f} | {lat['entropy_z']['entropy']:.2f} | "
                 f"{lat['entropy_mu']['entropy']:.2f} | {_n(p.get('entropy'))} | {a['report']['kl']['mean']:.2f} | "
                 f"{lat['mutual_information']:.2f} | {lat['active_units']} / {lat['dim']} |")

    # Table 7
    L += ["", "## Table 7 analogue: reconstruction BLEU", "",
          "Sentence BLEU-1 (with brevity penalty) averaged over the test sentences, three decoding modes; the "
          "paper's column is its Table 7 (sMIM, AE) or Table 2 (sVAE).", "",
          "| model | z ~ q, greedy | z = mean, greedy | z ~ q, sampling T=1 | paper |", "|---|---|---|---|---|"]
    for r, a in analyses:
        modes = a["report"].get("bleu_modes", [])
        cells = " | ".join(f"{m['sentence_bleu1']:.3f}" for m in modes) or "- | - | -"
        L.append(f"| {lab(r)} | {cells} | {_n(paper.get(r.key, {}).get('bleu'), '.3f')} |")

    L += _seed_table(analyses)

    # checks, computed
    L += ["", "## Checks (computed from the tables above)", ""]
    by = {(r.variant, r.latent_dim): a for r, a in analyses if r.seed == analyses[0][0].seed}
    if max(n_seeds.values()) > 1:
        L.append(f"Across models, seed {analyses[0][0].seed} only; the seed table above gives the spread.")
        L.append("")
    for v in VARIANTS:
        ds = sorted(d for (vv, d) in by if vv == v)
        if len(ds) > 1:
            row = lambda f: " -> ".join(f(by[(v, d)]) for d in ds)  # noqa: E731
            L.append(f"- {VARIANTS[v][1].format(d='d')}, d = {' -> '.join(map(str, ds))}: KL "
                     f"{row(lambda a: _n(a['report']['kl']['mean']))}, MI "
                     f"{row(lambda a: _n(a['report']['latent']['mutual_information']))}, BLEU "
                     f"{row(lambda a: _n(a['report'].get('bleu', {}).get('sentence_bleu1'), '.3f'))} "
                     f"(steps {row(lambda a: str(a['step']))}).")
    for d in sorted({d for _, d in by}):
        here = [(v, by[(v, d)]) for v in VARIANTS if (v, d) in by]
        if len(here) > 1:
            parts = [f"{VARIANTS[v][1].format(d=d)}: MI {a['report']['latent']['mutual_information']:.2f}, "
                     f"KL {a['report']['kl']['mean']:.2f}, IWAE N(0,I) "
                     f"{_n(a['report'].get('iwae', {}).get('nll_per_sentence'))}, IWAE train-prior "
                     f"{_n(a['report'].get('iwae_train_prior', {}).get('nll_per_sentence'))}" for v, a in here]
            L.append(f"- d = {d}: " + "; ".join(parts) + ".")
    for r, a in analyses:
        rep = a["report"]
        k = _best_held_out(rep)
        if k is not None:
            best = rep[k]["nll_per_sentence"]
            L.append(f"- {lab(r)}: MELBO {rep['melbo']['nll_per_sentence']:.2f} vs its best held-out bound "
                     f"{best:.2f} ({rep[k]['bound']}, prior {rep[k]['prior']}) [words+<eos>]: MELBO minus held-out "
                     f"= {rep['melbo']['nll_per_sentence'] - best:+.2f} nats.")
    L.append(f"- MI estimates are capped at log N = {math.log(first['sentences']):.2f} nats (N = {first['sentences']} "
             "evaluated sentences), so models at the cap cannot be ranked by it.")
    if rep_cfg.get("notes"):
        L += ["", "## Notes", "", "Written by hand from the numbers above (the config's report.notes); "
              "re-check them when the runs change.", ""]
        L += [f"- {note}" for note in rep_cfg["notes"]]

    # figures
    L += ["", "## Figures", "",
          f"Made by `smim report`'s figure code from the same evaluations; the full per-run report with every "
          f"bound and the Fig. 5 extrapolations is [{rel}/report.md]({rel}/report.md).", ""]
    for title, suffix, what in (("Fig. 3: cross terms log p(x_i|z_j), log q(z_i|x_j)", "fig3",
                                 f"{rc.fig3_n} test sentences"),
                                ("Fig. 5: MELBO vs test-set size", "fig5", f"{rc.fig5_trials} subsets per size"),
                                ("Fig. 6: per-sentence bounds", "fig6", "all evaluated sentences")):
        L += [f"### {title} ({what})", ""]
        for r, a in analyses:
            L += [f"{lab(r)}, step {a['step']}:", "", f"![{suffix} {r.name}]({rel}/{r.name}-{suffix}.png)", ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(L) + "\n")
    return page


def write_latent_page(cfg: dict, runs: list[Run], command: str) -> Path:
    """Tables 11-20 analogues with the latent CLI (reconstruct, sample, interpolate) of the trained models."""
    from .cli import main as smim
    lc = cfg.get("latent")
    if not lc:
        raise UserError(f"{cfg['_path']}: no 'latent' section")
    page = Path(lc.get("page", "docs/results/latent.md"))
    by_name = {r.key: r for r in reversed(runs)} | {r.name: r for r in runs}  # VARIANT-D: its first seed
    L = [f"# {lc.get('title', 'Latent-space tables')}", "",
         f"Generated by `{command}` on {_utc()} (commit {_commit()}). Every block is the output of the `smim` "
         "command above it, run on the checkpoint named there (same seed, so it prints the same again).", ""]
    if lc.get("description"):
        L += [lc["description"], ""]
    ae = by_name.get(lc.get("ae", ""))

    def run_cli(argv):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = smim(argv)
        if rc:
            raise UserError(f"smim {' '.join(argv)} failed with status {rc}")
        L.extend(["```", "$ smim " + " ".join(f'"{x}"' if " " in x else x for x in argv), buf.getvalue().rstrip(),
                  "```", ""])

    for name in lc.get("models", []):
        r = by_name.get(name)
        if r is None or not r.out.exists():
            L += [f"## {name}: not trained", ""]
            continue
        which = r.external.get("checkpoint", "best") if r.external else lc.get("checkpoint", "best")
        step = _read_json(r.out / "analysis.json", {}).get("step", "?")
        common = ["--checkpoint", which, "--seed", str(lc.get("seed", 0))]
        L += [f"## {r.label} ({r.name}, checkpoint-{which}, step {step})", "",
              "Reconstruction (Table 11 style): (D) data, (M) decoded posterior mean, (R) decoded z ~ q(z|x), "
              f"(P) z ~ N(mu, ({lc.get('scale', 10)} sigma)^2)" + (f", (AE) the mean reconstruction of {ae.label}"
                                                                    if ae and ae is not r else "") + "; greedy.", ""]
        argv = ["reconstruct", str(r.out), *lc["sentences"], *common, "--scale", str(lc.get("scale", 10))]
        if ae and ae is not r and ae.out.exists():
            argv += ["--ae", str(ae.out)]
        run_cli(argv)
        L += [f"Samples from z ~ N(0, {lc.get('std', 0.1)}^2 I), greedy (Tables 12-15 style):", ""]
        run_cli(["sample", str(r.out), "-n", str(lc.get("n_samples", 10)), "--std", str(lc.get("std", 0.1)), *common])
        for a_, b_ in lc.get("pairs", []):
            L += ["Interpolation between sampled codes of two test sentences, 10 points, greedy "
                  "(Tables 16-20 style):", ""]
            run_cli(["interpolate", str(r.out), a_, b_, "--steps", str(lc.get("steps", 10)), *common])
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(L) + "\n")
    return page
