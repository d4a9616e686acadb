"""The `smim` command line. Each subcommand is a small function; options that
set a config value carry the config field's name (`--latent-dim` -> latent_dim).

A user mistake (UserError) prints one line on stderr and exits with status 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from . import cli_latent
from .config import PRECISIONS, PRESETS, ModelConfig, TrainConfig
from .errors import UserError

_HIDDEN_MODEL_FIELDS = {"vocab_size", "pad_id", "unk_id", "sos_id", "eos_id"}


def _add_config_flags(p: argparse.ArgumentParser, cls, skip=()) -> None:
    """One flag per dataclass field, default None so explicit values can be told apart."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}.get(
            str(f.type).split(" |")[0], str)
        help_text = f.metadata.get("help", "")
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None,
                       metavar=f.name.upper(), help=f"{help_text} (default: {f.default})".strip())


def _explicit(args, cls, skip=()) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def cmd_train(args) -> int:
    from .train import train
    preset = PRESETS[args.preset] if args.preset else {"model": {}, "train": {}}
    mc = ModelConfig(**{**preset["model"], **_explicit(args, ModelConfig, _HIDDEN_MODEL_FIELDS)})
    tc_args = _explicit(args, TrainConfig)
    tc = TrainConfig(**{**preset["train"], **tc_args})
    overrides = {k: v for k, v in tc_args.items()
                 if k in ("max_steps", "max_epochs", "eval_every", "log_every", "device", "data_dir")}
    result = train(mc, tc, args.out, resume=args.resume, overrides=overrides, quiet=args.quiet)
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
    """The split of the corpus the model was trained on (or of --corpus)."""
    from . import corpora
    from .data import load_split
    corpus = info.get("train", {}).get("corpus")
    if corpus is None:
        raise UserError(f"{path}: the model does not record its corpus; pass --corpus")
    rc = corpora.resolve(corpus, data_dir or info.get("train", {}).get("data_dir"), splits=(split,))
    datasets = [load_split(p, vocab, label_column=rc.label_column.get(p, False)) for p in rc.files[split]]
    ds = datasets[0]
    if len(datasets) > 1:
        from .data import Dataset
        ds = Dataset([s for d in datasets for s in d.seqs], ds.stats, sum(d.oov for d in datasets))
    print(ds.stats.summary() + (f"; {ds.oov} OOV tokens mapped to <unk>" if ds.oov else ""), file=sys.stderr)
    return ds.subset(max_sentences, 0)


def _heldout_config(args):
    """HeldoutConfig from the explicit flags over `base` (the --quick preset or the defaults)."""
    from .eval.heldout import HeldoutConfig
    base = {}
    if getattr(args, "quick", False):
        from .evaluate import QUICK
        base = dict(QUICK["heldout"])
    cfg = HeldoutConfig(**{**base, **_explicit(args, HeldoutConfig)})
    cfg.validate()
    return cfg


def _valid_split(path, info, split, data_dir, n, vocab):
    """Sentences for choosing held-out settings: the valid split, or train when valid is scored."""
    source = "train" if split == "valid" else "valid"
    ds = _load_eval_split(path, info, source, data_dir, n, vocab)
    return ds, f"{len(ds)} {source} sentences (seed 0)"


def cmd_evaluate(args) -> int:
    from .evaluate import QUICK, eval_extras, evaluate, format_report, quick_note
    from .modelio import load_model
    from .evaluate import resolve_device
    for name, default in (("repeats", 10), ("iwae_k", 100), ("max_sentences", 0)):
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
    heldout = _heldout_config(args)
    device = resolve_device(args.device)
    model, vocab, info = load_model(args.model, args.checkpoint, device)
    if args.corpus:
        info = {**info, "train": {**info.get("train", {}), "corpus": args.corpus}}
    ds = _load_eval_split(args.model, info, args.split, args.data_dir, args.max_sentences, vocab)
    for name, v in (("--n-z", args.n_z), ("--repeats", args.repeats), ("--batch-size", args.batch_size)):
        if v < 1:
            raise UserError(f"{name} must be a positive integer, got {v}")
    if args.iwae_k < 0 or args.agg_prior_m < 0:
        raise UserError("--iwae-k and --agg-prior-m must be >= 0 (0 turns them off)")
    corpus = info.get("train", {}).get("corpus")
    # the held-out aggregate prior is built from the training split, never from the evaluated one
    train_ds = (_load_eval_split(args.model, info, "train", args.data_dir, 0, vocab)
                if args.iwae_k and args.agg_prior_m else None)
    valid_ds, valid_what = (_valid_split(args.model, info, args.split, args.data_dir, heldout.heldout_valid, vocab)
                            if args.iwae_k and heldout.method_list() else (None, ""))
    if args.quick:
        print(quick_note(args, heldout), file=sys.stderr)
    rep = evaluate(model, ds, vocab, n_z=args.n_z, repeats=args.repeats, seed=args.seed,
                   batch_size=args.batch_size, bleu=not (args.no_bleu or args.quick), progress=True, device=device,
                   precision=args.precision, objective=info.get("train", {}).get("objective"), heldout=heldout,
                   valid_ds=valid_ds, valid_what=valid_what,
                   **eval_extras(model, vocab, ds, corpus, train_ds, args.iwae_k, args.agg_prior_m, args.seed,
                                 args.batch_size, device))
    per_sentence = rep.pop("per_sentence")
    rep = {"model": str(args.model), "split": args.split, "corpus": corpus,
           "objective": info.get("train", {}).get("objective"), **rep}
    if args.quick:
        rep["quick"] = quick_note(args, heldout)
    print(format_report(rep))
    if args.quick:
        print(rep["quick"])
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2, default=float))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.per_sentence:
        import numpy as np
        from .evaluate import per_sentence_arrays
        np.savez_compressed(args.per_sentence, **per_sentence_arrays(per_sentence))
        print(f"wrote per-sentence values to {args.per_sentence}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .modelio import load_model
    from .report import ReportConfig, analyse_run, parse_reference, write_report
    cfg = ReportConfig(**{k: getattr(args, k) for k in ReportConfig.__dataclass_fields__})
    cfg.validate()
    reference = parse_reference(args.reference_nll)
    heldout = _heldout_config(args)
    runs = []
    for path in args.runs:
        model, vocab, info = load_model(path, args.checkpoint, cfg.device)
        ds = _load_eval_split(path, info, cfg.split, args.data_dir, cfg.max_sentences, vocab)
        train_ds = _load_eval_split(path, info, "train", args.data_dir, 0, vocab) if cfg.iwae_k and cfg.agg_prior_m else None
        valid = (_valid_split(path, info, cfg.split, args.data_dir, heldout.heldout_valid, vocab)
                 if cfg.iwae_k and heldout.method_list() else (None, ""))
        runs.append(analyse_run(Path(path).name, model, vocab, info, ds, train_ds, cfg, heldout=heldout, valid=valid))
    page = write_report(runs, args.out, cfg, "smim report " + " ".join(sys.argv[2:]), reference, heldout)
    print(f"wrote {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smim", description="SentenceMIM: sentence-level latent variable language models")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train sMIM / sVAE / AE",
                       description="Train a model. Defaults are the paper's PTB settings.")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--preset", choices=sorted(PRESETS), help="ptb (default settings) or large (Yahoo/Yelp/WT103)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--evaluate", action="store_true",
                   help="afterwards, evaluate the best checkpoint on the test split (writes OUT/eval-test.json)")
    _add_config_flags(t, ModelConfig, _HIDDEN_MODEL_FIELDS)
    _add_config_flags(t, TrainConfig)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="bounds, perplexities, BLEU on a split")
    e.add_argument("model", help="run directory, model directory or checkpoint file")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--corpus", help="evaluate on this corpus instead of the training corpus")
    e.add_argument("--data-dir")
    e.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    e.add_argument("--n-z", type=int, default=1, help="z samples per sentence for the MELBO")
    e.add_argument("--repeats", type=int, default=None, help="MELBO repeats for mean/std (paper: 10; --quick: 2)")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--max-sentences", type=int, default=None,
                   help="evaluate a fixed random subset (0 = all, the default; --quick: 200)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-bleu", action="store_true")
    e.add_argument("--iwae-k", type=int, default=None,
                   help="importance samples per sentence, every held-out method (default 100, --quick 10; 0 = none)")
    e.add_argument("--quick", action="store_true",
                   help="a first look in about a minute (PTB, 512-d, 2 CPU threads): a 200-sentence subset, 2 MELBO "
                        "repeats, K=10, cheap held-out methods on 20 validation sentences, no BLEU; it prints what it "
                        "left out. Explicit flags override it")
    e.add_argument("--agg-prior-m", type=int, default=1000,
                   help="training sentences in the aggregate-posterior prior of the held-out IWAE (0 = off)")
    from .eval.heldout import HeldoutConfig
    _add_config_flags(e, HeldoutConfig)
    e.add_argument("--json", help="write the report here")
    e.add_argument("--per-sentence", help="write per-sentence values (.npz) here")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    e.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="decoder scoring precision: fp32 (default, exact) or bf16 vocabulary projection "
                        "(~25%% faster here with AVX512-BF16; per-sentence deviation std ~0.05 nats)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="Markdown report with the paper's tables and figures (needs matplotlib)",
                       description="Evaluate RUNs on a split and write DIR/report.md, PNG figures, results.json.")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run directories, model directories or checkpoints")
    r.add_argument("--out", required=True, help="directory for report.md and the figures")
    r.add_argument("--data-dir")
    r.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    r.add_argument("--reference-nll", action="append", metavar="LABEL=NATS",
                   help="another model's NLL per sentence for the Fig. 5 extrapolation (repeatable)")
    from .report import ReportConfig
    for f in dataclasses.fields(ReportConfig):
        r.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=f.default,
                       help=f"(default: {f.default})")
    _add_config_flags(r, HeldoutConfig)
    r.set_defaults(func=cmd_report)
    cli_latent.register(sub)  # export, reconstruct, sample, interpolate, encode, neighbors
    from . import cli_qa; cli_qa.register(sub)  # qa rank, answer, baselines, convert-yahoocqa
    from . import reproduce; reproduce.register(sub)  # reproduce CONFIG: the paper's tables (issue #5)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, OSError) as e:  # OSError: a path the user gave cannot be read or written
        if debug:
            raise
        print(f"smim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
