"""`smim reproduce CONFIG`: train and evaluate a matrix of runs from one config file,
then write a results page (issue #5, the paper's Tables 2, 6, 7 and Figs. 3, 5, 6).

    smim reproduce benchmarks/reproduce/ptb.json                  # everything, unattended
    smim reproduce CONFIG --only mim-16,vae-16 --max-steps 500    # a subset, fewer steps
    smim reproduce CONFIG --device cuda                           # on a GPU
    smim reproduce CONFIG --report-only                           # re-create the page
    smim reproduce CONFIG --latent-only                           # the Tables 11-20 page

The matrix is variants x latent_dims x seeds; a run is named VARIANT-D-sSEED
(`--only mim-16` picks every seed of mim-16). Variants: mim, vae, vae-kl (logistic KL
annealing), ae, and lm (the GRU language model: no latent, one run per seed, named
lm-0-sSEED). `--parallel N` runs N at once as child processes. Each run lives in RUNS_DIR/NAME:

    NAME/                 an ordinary `smim train` run directory (resumable)
    NAME/reproduce.json   one record per training session (steps, wall time, commit, command);
                          a resumed session is recorded as it starts, so one whose driver
                          is killed is closed by the next at its last checkpoint ("killed")
    NAME/analysis.json    the evaluation (report.analyse_run), arrays in analysis.npz
    NAME/analysis-stages/ while an evaluation runs: its finished stages (eval.stages), so
                          one that is killed resumes; removed once analysis.json is written

A run whose checkpoint has reached max_steps / max_epochs is skipped, a started one is
resumed (exactly, see train.py), a finished evaluation of the same checkpoint step with
the same settings is reused. `external` runs are someone else's run directories: the
driver copies the chosen checkpoint once into RUNS_DIR/NAME (a snapshot, never trained)
and evaluates the copy. Config keys (JSON, or TOML read with tomllib):

    name, corpus, data_dir, preset, runs_dir, model{}, train{}, run_train{VARIANT-D or NAME: {train}},
    variants[], latent_dims[], seeds[], exclude[], only[], external{NAME: {path, checkpoint[, wall_s, wall_from]}}, evaluate{ReportConfig},
    heldout{HeldoutConfig: the held-out methods, chosen on validation sentences},
    run_heldout{VARIANT-D or NAME: {heldout}} (a run's own held-out settings over heldout{}),
    report{page, figures, title, machine, notes[], commands[], paper{NAME: {...}}, paper_tables, main_table,
           references{title, text, rows[{name, ppl, nll, note}]}}, latent{...}
"""

from __future__ import annotations

import sys

from ..cliargs import device_type, number
from ..errors import UserError
from .driver import drive, drive_parallel, eval_settings, heldout_settings, load_analysis
from .latent_page import write_latent_page
from .page import write_page
from .plan import VARIANTS, Run, commit, load_config, plan, train_command, train_state

__all__ = ["VARIANTS", "Run", "load_config", "plan", "register", "cmd_reproduce"]


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="train + evaluate a matrix of runs from a config; write a results page",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="JSON or TOML config (benchmarks/reproduce/*.json)")
    p.add_argument("--only", help="comma-separated run names or VARIANT-D prefixes (e.g. mim-16,vae-16)")
    p.add_argument("--max-steps", type=number(int, ge=0), metavar="N",
                   help="override train.max_steps for every run (0 = no limit)")
    p.add_argument("--max-epochs", type=number(int, ge=1), metavar="N", help="override train.max_epochs for every run")
    p.add_argument("--device", type=device_type,
                   help="training and evaluation device: auto, cpu, cuda or cuda:N (default: the config's)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the named corpora (overrides the config's "
                                                     "data_dir; default: $SENTENCEMIM_DATA, else ~/.cache/sentencemim)")
    p.add_argument("--runs-dir", metavar="DIR", help="override runs_dir (where the run directories go)")
    p.add_argument("--threads", type=number(int, ge=1), metavar="N", help="torch threads (set OMP_NUM_THREADS too)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate each started run at the checkpoint it has reached (partial runs too)")
    p.add_argument("--no-report", action="store_true", help="do not write the results page")
    p.add_argument("--report-only", action="store_true", help="only (re)write the page from finished evaluations")
    p.add_argument("--latent-only", action="store_true", help="only write the latent-table page (Tables 11-20)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the state of each run")
    p.add_argument("--progress-page", metavar="PAGE.md",
                   help="only write a progress page (state, step, epochs, best validation, lr decays, speed, curves "
                        "of each run) from the run directories, evaluating nothing; safe beside running trainings")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    p.add_argument("--parallel", type=number(int, ge=1), default=1, metavar="N",
                   help="train/evaluate up to N runs at once as child processes (on a CPU the cores are split "
                        "between them; on a GPU they share the device); default 1: one after another here")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    import torch
    commit()  # the code this process runs; later commits during a long matrix do not change it
    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    ov = {k: v for k, v in (("max_steps", args.max_steps), ("max_epochs", args.max_epochs),
                            ("device", args.device), ("data_dir", args.data_dir)) if v is not None}
    if args.data_dir:
        cfg["data_dir"] = args.data_dir
    if args.device:
        from ..runtime import resolve_device
        resolve_device(args.device)  # a missing GPU: one line, before anything runs
    runs = plan(cfg, args.only.split(",") if args.only else None, ov, args.runs_dir)
    if not args.no_eval and not args.dry_run and not args.progress_page:
        eval_settings(cfg, args.device)  # evaluation settings are checked before hours of training
        heldout_settings(cfg)
    command = "smim reproduce " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else "smim reproduce " + args.config
    print(f"{cfg.get('name', args.config)}: {len(runs)} run(s) in {runs[0].out.parent if runs else '-'}", flush=True)
    if args.dry_run:
        for r in runs:
            status, step = train_state(r)
            print(f"  {r.name:<16} {status:<8} step {step:<6} " + (f"external {r.external['path']}" if r.external
                                                                   else train_command(r, status == "partial")))
        return 0
    if args.progress_page:
        from .progress import write_progress_page
        page = write_progress_page(cfg, runs, args.progress_page, command)
        print(f"wrote {page}")
        return 0
    if args.latent_only:
        page = write_latent_page(cfg, runs, command)
        print(f"wrote {page}")
        return 0
    if args.parallel < 1:
        raise UserError(f"--parallel must be a positive integer, got {args.parallel}")
    if args.eval_only and args.no_eval:
        raise UserError("--eval-only and --no-eval together leave nothing to do")
    if not args.report_only and args.parallel > 1 and len(runs) > 1:
        passthrough = [x for flag, v in (("--max-steps", args.max_steps), ("--max-epochs", args.max_epochs),
                                         ("--device", args.device), ("--data-dir", args.data_dir),
                                         ("--runs-dir", args.runs_dir)) if v is not None for x in (flag, str(v))]
        passthrough += ["--no-eval"] if args.no_eval else []
        passthrough += ["--eval-only"] if args.eval_only else []
        rc = drive_parallel(cfg, runs, args.parallel, passthrough, args.device)
        if rc:
            return rc
    elif not args.report_only:
        rc = drive(cfg, runs, args.device, args.data_dir, args.quiet, do_eval=not args.no_eval,
                   do_train=not args.eval_only)
        if rc:
            return rc
    if not args.no_report and not args.no_eval:
        analyses = [(r, a) for r in runs if (a := load_analysis(r)) is not None]
        if not analyses:
            raise UserError("no finished evaluations to report")
        from .progress import state_rows
        done = {r.name for r, _ in analyses}  # every run of the config not on the page, --only or not
        page = write_page(cfg, analyses, command,
                          pending=state_rows([r for r in plan(cfg, None, ov, args.runs_dir) if r.name not in done]))
        print(f"wrote {page}")
    return 0
