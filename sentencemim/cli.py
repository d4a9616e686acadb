"""The `smim` command line. Each subcommand is a small function; options that
set a config value carry the config field's name (`--latent-dim` -> latent_dim).

A user mistake (UserError) prints one line on stderr and exits with status 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from . import cli_latent
from .cliargs import Parser, config_flags, device_type, explicit, number
from .config import PRECISIONS, PRESETS, SPLITS, HeldoutConfig, ModelConfig, ReportConfig, TrainConfig
from .errors import Interrupted, UserError

_HIDDEN_MODEL_FIELDS = {"vocab_size", "pad_id", "unk_id", "sos_id", "eos_id"}


def cmd_train(args) -> int:
    from .train import train
    preset = PRESETS[args.preset] if args.preset else {"model": {}, "train": {}}
    model_args = explicit(args, ModelConfig, _HIDDEN_MODEL_FIELDS)
    tc_args = explicit(args, TrainConfig)
    if args.resume:  # the saved run's settings; what was given is applied or refused (rundir.resume_configs)
        result = train(None, None, args.out, resume=True, quiet=args.quiet,
                       overrides={**preset["train"], **tc_args}, model_overrides={**preset["model"], **model_args},
                       accept_changed_data=args.accept_changed_data)
    else:
        if tc_args.get("objective") == "lm":
            model_args.setdefault("latent_dim", 0)  # the language model has no latent
        mc = ModelConfig(**{**preset["model"], **model_args})
        tc = TrainConfig(**{**preset["train"], **tc_args})
        result = train(mc, tc, args.out, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: result[k] for k in ("status", "step", "epoch", "best_val", "lr")}))
    if result["status"] == "interrupted":
        return 128 + int(result["signal"])
    if args.evaluate and int(os.environ.get("RANK", "0")) == 0:
        out = Path(args.out)
        eval_args = build_parser().parse_args(["evaluate", str(out), "--json", str(out / "eval-test.json")])
        return cmd_evaluate(eval_args)
    return 0


def _load_eval_split(path, info, split, data_dir, max_sentences, vocab):
    from .corpora import load_eval_split
    return load_eval_split(path, info, split, data_dir, max_sentences, vocab)


def _heldout_config(args):
    """HeldoutConfig from the explicit flags over `base` (the --quick preset or the defaults)."""
    base = {}
    if getattr(args, "quick", False):
        from .eval.evaluate import QUICK
        base = dict(QUICK["heldout"])
    cfg = HeldoutConfig(**{**base, **explicit(args, HeldoutConfig)})
    cfg.validate()
    return cfg


def _valid_split(path, info, split, data_dir, n, vocab):
    """Sentences for choosing held-out settings: the valid split, or train when valid is scored."""
    source = "train" if split == "valid" else "valid"
    ds = _load_eval_split(path, info, source, data_dir, n, vocab)
    return ds, f"{len(ds)} {source} sentences (seed 0)"


def cmd_evaluate(args) -> int:
    from .eval.evaluate import QUICK, eval_extras, evaluate, format_report, quick_note
    from .modelio import load_model
    from .runtime import resolve_device
    from .eval.scoring import check_precision, resolve_gradient_precision
    for name, default in (("repeats", 10), ("iwae_k", 100), ("max_sentences", 0)):
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
    heldout = _heldout_config(args)
    from .rundir import check_output_file
    check_output_file(args.json, "--json")
    if args.per_sentence and not args.per_sentence.endswith(".npz"):
        args.per_sentence += ".npz"  # what numpy writes
    check_output_file(args.per_sentence, "--per-sentence")
    device = resolve_device(args.device)
    check_precision(args.precision, device)  # before anything is read (numbers are checked by the parser)
    resolve_gradient_precision(heldout.gradient_precision, device)  # bf16 where it cannot run: one line, now
    model, vocab, info = load_model(args.model, args.checkpoint, device)
    if args.corpus:
        info = {**info, "train": {**info.get("train", {}), "corpus": args.corpus}}
    ds = _load_eval_split(args.model, info, args.split, args.data_dir, args.max_sentences, vocab)
    corpus = info.get("train", {}).get("corpus")
    # the held-out aggregate prior is built from the training split, never from the evaluated one
    train_ds = (_load_eval_split(args.model, info, "train", args.data_dir, 0, vocab)
                if args.iwae_k and args.agg_prior_m and model.has_latent else None)
    valid_ds, valid_what = (_valid_split(args.model, info, args.split, args.data_dir, heldout.heldout_valid, vocab)
                            if args.iwae_k and heldout.method_list() and model.has_latent else (None, ""))
    if args.quick:
        print(quick_note(args, heldout), file=sys.stderr)
    stages = _evaluate_stages(args, model, ds, valid_ds, train_ds)
    rep = evaluate(model, ds, vocab, n_z=args.n_z, repeats=args.repeats, seed=args.seed,
                   batch_size=args.batch_size, bleu=not (args.no_bleu or args.quick), progress=True, device=device,
                   precision=args.precision, objective=info.get("train", {}).get("objective"), heldout=heldout,
                   valid_ds=valid_ds, valid_what=valid_what, bound_sentences=args.bound_sentences, stages=stages,
                   **eval_extras(model, vocab, ds, corpus, train_ds, args.iwae_k, args.agg_prior_m, args.seed,
                                 args.batch_size, device))
    per_sentence = rep.pop("per_sentence")
    rep = {"model": str(args.model), "split": args.split, "corpus": corpus,
           "objective": info.get("train", {}).get("objective"), **rep}
    if args.quick:
        rep["quick"] = quick_note(args, heldout)
    if stages.resumed:  # read back from an interrupted run of this command; seconds when computed
        rep["resumed_stages"] = {n: stages.seconds[n] for n in stages.resumed}
    print(format_report(rep))
    if args.quick:
        print(rep["quick"])
    if args.json:
        from .rundir import write_atomic
        write_atomic(args.json, json.dumps(rep, indent=2, default=float))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.per_sentence:
        import numpy as np
        from .eval.terms import per_sentence_arrays
        np.savez_compressed(args.per_sentence, **per_sentence_arrays(per_sentence))
        print(f"wrote per-sentence values to {args.per_sentence}", file=sys.stderr)
    stages.clear()
    return 0


def _evaluate_stages(args, model, *datasets):
    """Where `smim evaluate RUN_DIR` keeps its finished stages (RUN_DIR/evaluate-stages-SPLIT),
    so that the same command run again after an interruption resumes. Run directories only:
    a model directory (config.json + weights, perhaps committed) is left as it is."""
    from .eval.stages import Stages, fingerprint
    run = Path(args.model)
    if not (run.is_dir() and any(run.glob("checkpoint-*.pt"))):
        return Stages()
    # what decides the numbers; the model and data paths are covered by the fingerprint
    key = {k: v for k, v in vars(args).items()
           if k not in ("func", "json", "per_sentence", "device", "model", "data_dir")}
    try:
        stages = Stages(Path(args.model) / f"evaluate-stages-{args.split}",
                        {"args": key, "model_and_sentences": fingerprint(model, *datasets)})
    except OSError as e:  # a read-only model directory: evaluate without keeping stages
        print(f"note: {args.model} is not writable ({e.strerror}); an interrupted evaluation will start over",
              file=sys.stderr)
        return Stages()
    if stages.kept():
        print(f"resuming an interrupted evaluation: {len(stages.kept())} stage(s) already done "
              f"({', '.join(stages.kept())})", file=sys.stderr)
    return stages


def cmd_report(args) -> int:
    from .modelio import load_model
    from .report import analyse_run, parse_reference, run_labels, write_report
    from .eval.scoring import check_precision
    cfg = ReportConfig(**{k: getattr(args, k) for k in ReportConfig.__dataclass_fields__})
    cfg.validate()
    check_precision(cfg.precision, cfg.device)
    reference = parse_reference(args.reference_nll)
    heldout = _heldout_config(args)
    labels = run_labels(args.runs)
    runs = []
    for path, label in zip(args.runs, labels):
        model, vocab, info = load_model(path, args.checkpoint, cfg.device)
        ds = _load_eval_split(path, info, cfg.split, args.data_dir, cfg.max_sentences, vocab)
        train_ds = _load_eval_split(path, info, "train", args.data_dir, 0, vocab) if cfg.iwae_k and cfg.agg_prior_m else None
        valid = (_valid_split(path, info, cfg.split, args.data_dir, heldout.heldout_valid, vocab)
                 if cfg.iwae_k and heldout.method_list() else (None, ""))
        runs.append(analyse_run(label, model, vocab, info, ds, train_ds, cfg, heldout=heldout, valid=valid))
    page = write_report(runs, args.out, cfg, "smim report " + " ".join(sys.argv[2:]), reference, heldout)
    print(f"wrote {page}")
    return 0


def build_parser() -> Parser:
    p = Parser(prog="smim", description="SentenceMIM: sentence-level latent variable language models. "
                                        "A mistake in the input is one line on stderr and exit status 2.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (accepted anywhere)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train sMIM / sVAE / AE",
                       description="Train a model into a run directory. Defaults are the paper's PTB settings. "
                                   "With --resume the saved settings are kept: only --max-steps, --max-epochs, "
                                   "--eval-every, --log-every, --checkpoint-every, --device and --data-dir may "
                                   "change; any other flag that differs from the run is refused.")
    t.add_argument("--out", required=True, metavar="DIR",
                   help="run directory (config.json, vocab.json, metrics.jsonl, checkpoints); one writer at a time")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint-latest.pt")
    t.add_argument("--accept-changed-data", action="store_true",
                   help="with --resume: continue although the corpus files or vocab.json differ from the "
                        "fingerprints (sha256) recorded for the run; the new fingerprints are recorded")
    t.add_argument("--preset", choices=sorted(PRESETS),
                   help="ptb: the paper's PTB settings (the defaults); large: Yahoo/Yelp15/WikiText-103 "
                        "(embedding 512, hidden 1024, SGD lr 5.0, patience 1)")
    t.add_argument("--quiet", action="store_true", help="no progress or log lines on stderr")
    t.add_argument("--evaluate", action="store_true",
                   help="afterwards, evaluate the best checkpoint on the test split (writes OUT/eval-test.json)")
    config_flags(t, ModelConfig, _HIDDEN_MODEL_FIELDS, title="model (ModelConfig)")
    config_flags(t, TrainConfig, title="training (TrainConfig)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="bounds, perplexities, BLEU on a split",
                       description="Evaluate a model on a split of its corpus: MELBO, ELBO, IWAE, perplexities "
                                   "in two <eos> conventions, latent diagnostics, BLEU of reconstructions.")
    e.add_argument("model", help="run directory, model directory or checkpoint file")
    e.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (default: test)")
    e.add_argument("--corpus", help="evaluate on this corpus (name or folder) instead of the training corpus")
    e.add_argument("--data-dir", metavar="DIR",
                   help="folder holding the named corpora (default: the run's, else $SENTENCEMIM_DATA, "
                        "else ~/.cache/sentencemim)")
    e.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    e.add_argument("--n-z", type=number(int, ge=1), default=1, metavar="N",
                   help="MELBO: z samples per sentence (default: 1)")
    e.add_argument("--repeats", type=number(int, ge=1), default=None, metavar="N",
                   help="MELBO and sampled BLEU: repeats for the mean and std (paper: 10; default: 10, --quick: 2)")
    e.add_argument("--batch-size", type=number(int, ge=1), default=100, metavar="N",
                   help="sentences per evaluation batch (default: 100)")
    e.add_argument("--max-sentences", type=number(int, ge=0), default=None, metavar="N",
                   help="evaluate a fixed random subset of N sentences (0 = all; default: 0, --quick: 100)")
    e.add_argument("--bound-sentences", type=number(int, ge=0), default=0, metavar="N",
                   help="IWAE and the held-out bounds (the costly part) on a fixed random subset of N of the "
                        "evaluated sentences; the MELBO, ELBO, reconstruction and BLEU stay on all (0 = all; "
                        "default: 0)")
    e.add_argument("--seed", type=number(int, ge=0, le=2 ** 63 - 1), default=0, metavar="N",
                   help="random seed of the z samples and the subset (default: 0)")
    e.add_argument("--no-bleu", action="store_true", help="skip the BLEU of reconstructions")
    e.add_argument("--iwae-k", type=number(int, ge=0), default=None, metavar="K",
                   help="importance samples per sentence, every held-out method (0 = none; default: 100, "
                        "--quick: 10)")
    e.add_argument("--quick", action="store_true",
                   help="a first look in about a minute (PTB, 512-d, 2 CPU threads): a 100-sentence subset, 2 MELBO "
                        "repeats, K=10, cheap held-out methods on 10 validation sentences, no BLEU; it prints what "
                        "it left out. Explicit flags override it")
    e.add_argument("--agg-prior-m", type=number(int, ge=0), default=1000, metavar="M",
                   help="training sentences in the aggregate-posterior prior of the held-out IWAE "
                        "(0 = off; default: 1000)")
    config_flags(e, HeldoutConfig, title="held-out bounds (eval.heldout)")
    e.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    e.add_argument("--per-sentence", metavar="FILE", help="write per-sentence values here (.npz; the suffix is added when missing)")
    e.add_argument("--device", default="auto", type=device_type,
                   help="auto (a GPU when there is one, else the CPU; the default everywhere), cpu, cuda or cuda:N")
    e.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="decoder scoring precision: fp32 (default, exact) or bf16 vocabulary projection "
                        "(~25%% faster with AVX512-BF16; per-sentence deviation std ~0.05 nats); bf16 is refused "
                        "where this CPU or GPU does not run bf16 matrix products")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="Markdown report with the paper's tables and figures (needs matplotlib)",
                       description="Evaluate RUNs on a split and write DIR/report.md, PNG figures, results.json.")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run directories, model directories or checkpoints")
    r.add_argument("--out", required=True, metavar="DIR", help="directory for report.md and the figures")
    r.add_argument("--data-dir", metavar="DIR",
                   help="folder holding the named corpora (default: the run's, else $SENTENCEMIM_DATA)")
    r.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    r.add_argument("--reference-nll", action="append", metavar="LABEL=NATS",
                   help="another model's NLL per sentence for the Fig. 5 extrapolation (repeatable)")
    config_flags(r, ReportConfig, defaults_from_config=True, title="evaluation (ReportConfig)")
    config_flags(r, HeldoutConfig, title="held-out bounds (eval.heldout)")
    r.set_defaults(func=cmd_report)
    cli_latent.register(sub)  # export, reconstruct, sample, interpolate, encode, neighbors
    from . import cli_qa; cli_qa.register(sub)  # qa rank, answer, baselines, convert-yahoocqa
    from . import reproduce; reproduce.register(sub)  # reproduce CONFIG: the paper's tables (issue #5)
    from . import cli_serve; cli_serve.register(sub)  # serve MODEL, curves RUN... (issue #15)
    return p


def describe(e: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an error that ended a command. User mistakes and
    resource failures (disk full, out of memory, a missing GPU) are status 2; anything
    else is a bug (status 1), still one line unless --debug."""
    import errno
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, UserError):
        return 2, msg
    torch = sys.modules.get("torch")
    oom = isinstance(e, MemoryError) or (torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())))
    if oom or (isinstance(e, RuntimeError) and any(s in msg for s in (
            "out of memory", "can't allocate memory", "not enough memory", "DefaultCPUAllocator"))):
        return 2, (f"out of memory ({msg[:200]}); try a smaller --batch-size or model, or another --device")
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return 2, f"no space left on device{where}"
        return 2, f"{e.strerror or msg}{where}" if e.strerror else msg
    return 1, (f"internal error, not a mistake in your input ({type(e).__name__}: {msg[:300]}); "
               "rerun with --debug for the traceback and please report it")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or an argument error already printed on one line
        return e.code if isinstance(e.code, int) else 2
    old_handlers = _stop_on_signals()
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:  # `smim sample ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001 - every error ends in one line (the traceback with --debug)
        if debug:
            raise
        code, msg = describe(e)
        name = args.command + (f" {args.qa_command}" if getattr(args, "qa_command", None) else "")
        print(f"smim {name}: error: {msg}", file=sys.stderr)
        return code
    finally:
        if not _FIRED:  # after a stop signal stay deaf to a second one: the process is ending
            for s, h in old_handlers.items():
                signal.signal(s, h)


_FIRED: list[int] = []  # the stop signal this process got, if any


def _raise_interrupted(signum, frame):
    # once: a stop often comes twice (`pkill` reaches a run and its driver, which passes it on),
    # and a second Interrupted raised inside the cleanup of the first would end in a traceback
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    _FIRED.append(signum)
    raise Interrupted(signum)


def _stop_on_signals() -> dict:
    """SIGTERM, and SIGINT unless this process was started with it ignored, raise `Interrupted`
    in every command (training installs its own handlers on top, to checkpoint first). Without
    this SIGTERM ends the process with no word of what it kept. An inherited ignored SIGINT is
    left ignored: a shell without job control (a script's `cmd &`) starts its background jobs
    that way so that Ctrl-C on the script spares them; stop such a job with SIGTERM. Returns the
    handlers it replaced (none off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _FIRED.clear()
    sigs = [signal.SIGTERM] + ([] if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else [signal.SIGINT])
    return {s: signal.signal(s, _raise_interrupted) for s in sigs}


if __name__ == "__main__":
    sys.exit(main())
