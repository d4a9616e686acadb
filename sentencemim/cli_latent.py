"""`smim` subcommands that use the latent space (issue #4):

    smim export RUN --out DIR                       training checkpoint -> model directory
    smim reconstruct MODEL "sentence" ... [--ae AE]  the (D)/(M)/(R)/(P)[/(AE)] rows of Table 11
    smim sample MODEL -n 10 [--std 0.1]             sentences from z ~ N(0, std^2 I)
    smim interpolate MODEL "a" "b" --steps 10       decode equispaced codes between two sentences
    smim encode MODEL --input FILE --output codes.npy   posterior means, one row per non-blank line
    smim neighbors MODEL --index FILE "query" ...   nearest index sentences in latent space

MODEL is a model directory, a run directory or a checkpoint file. Every random
choice is seeded (--seed, default 0), so a command prints the same thing twice.
Out-of-vocabulary words are mapped to <unk> and reported on stderr.
"""

from __future__ import annotations

import argparse
import sys

from .cliargs import device_type, number
from .config import SEED_MAX
from .errors import UserError


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _load(path, args):
    from .api import SentenceMIM
    from .runtime import resolve_device
    return SentenceMIM.from_pretrained(path, args.checkpoint, resolve_device(args.device), lowercase=args.lowercase,
                                       batch_size=args.batch_size, on_oov=_note)


def _decode_kwargs(args) -> dict:
    return dict(method=args.method, max_len=args.max_len, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, beam_size=args.beam_size, length_penalty=args.length_penalty,
                ban_unk=args.ban_unk)


# ---------------------------------------------------------------------- handlers
def cmd_export(args) -> int:
    from .modelio import export
    out = export(args.run, args.out, args.checkpoint, overwrite=args.force)
    print(f"wrote {out}/config.json, model.safetensors, vocab.json, README.md (model card)")
    return 0


def cmd_reconstruct(args) -> int:
    m = _load(args.model, args)
    ae = _load(args.ae, args) if args.ae else None
    if ae is not None and ae.objective not in (None, "ae"):
        _note(f"--ae {args.ae} was trained with objective {ae.objective!r}, not 'ae'")
    kw = _decode_kwargs(args)
    m.to_ids(args.sentences)  # report OOV words once, not once per row
    m.on_oov = None
    rows = [("(D)", [" ".join(m.tokenize(s)) for s in args.sentences]),
            ("(M)", m.reconstruct(args.sentences, "mean", **kw, seed=args.seed)),
            ("(R)", m.reconstruct(args.sentences, "sample", **kw, seed=args.seed)),
            # another seed: the perturbation noise is not the (R) noise scaled up
            ("(P)", m.reconstruct(args.sentences, "perturb", args.scale, **kw, seed=args.seed + 1))]
    if ae is not None:
        rows.append(("(AE)", ae.reconstruct(args.sentences, "mean", **kw, seed=args.seed)))
    width = max(len(label) for label, _ in rows)
    for i in range(len(args.sentences)):
        if i:
            print()
        for label, texts in rows:
            print(f"{label:<{width}} {texts[i]}")
    return 0


def cmd_sample(args) -> int:
    m = _load(args.model, args)
    for s in m.sample(args.n, args.std, seed=args.seed, **_decode_kwargs(args)):
        print(s)
    return 0


def cmd_interpolate(args) -> int:
    m = _load(args.model, args)
    steps = args.steps
    texts = m.interpolate(args.a, args.b, steps, "mean" if args.mean else "sample", seed=args.seed,
                          **_decode_kwargs(args))
    for i, s in enumerate(texts):
        print(f"{i / (steps - 1):.2f}  {s}")
    return 0


def cmd_encode(args) -> int:
    for name, path in (("--output", args.output), ("--std-output", args.std_output)):
        if path is not None and not str(path).endswith(".npy"):
            raise UserError(f"{name} must name a .npy file, got {path}")
    m = _load(args.model, args)
    rep = m.encode_file(args.input, args.output, args.std_output, chunk_size=args.chunk_size,
                        progress=not args.quiet)
    print(f"{rep['path']}: {rep['lines']} lines, {rep['sentences']} encoded, {rep['empty']} blank skipped; "
          f"wrote {args.output} ({rep['sentences']} x {m.latent_dim} float32 posterior means)"
          + (f" and {args.std_output} (stds)" if args.std_output else ""), file=sys.stderr)
    return 0


def cmd_neighbors(args) -> int:
    from .api import load_index, nearest
    m = _load(args.model, args)
    k = args.k
    lines, codes = load_index(m, args.index, args.codes, progress=not args.quiet, purpose="search")
    query = m.encode(args.queries)[0]
    rows, dist = nearest(query, codes, k, args.metric)
    for qi, q in enumerate(args.queries):
        if qi:
            print()
        print(f"query: {' '.join(m.tokenize(q))}")
        for rank, (r, d) in enumerate(zip(rows[qi], dist[qi]), 1):
            print(f"{rank:>3}  {d:8.4f}  {lines[r]}")
    return 0


# ---------------------------------------------------------------------- parsers
DEVICE_HELP = "auto (a GPU when there is one, else the CPU; the default everywhere), cpu, cuda or cuda:N"


def _model_args(p: argparse.ArgumentParser, name: str = "model") -> None:
    p.add_argument(name, help="model directory, run directory or checkpoint file")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--device", default="auto", type=device_type, help=DEVICE_HELP)
    p.add_argument("--lowercase", action="store_true", help="lowercase input sentences (PTB is lowercase)")
    p.add_argument("--batch-size", type=number(int, ge=1), default=100, metavar="N",
                   help="sentences per encoder/decoder batch (default: 100)")


def _decoding_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--method", default="greedy", choices=("greedy", "sample", "beam"),
                   help="greedy (the likeliest word each step), sample (temperature / top-k / top-p) or beam "
                        "search (default: greedy)")
    g.add_argument("--max-len", type=number(int, ge=1), default=100, metavar="N",
                   help="tokens per sentence at most (default: 100)")
    g.add_argument("--temperature", type=number(float, gt=0), default=1.0, metavar="T",
                   help="sample only: divide the logits by T > 0 (default: 1.0)")
    g.add_argument("--top-k", type=number(int, ge=0), default=0, metavar="K",
                   help="sample only: keep the k likeliest tokens (0 = all; default: 0)")
    g.add_argument("--top-p", type=number(float, gt=0, le=1), default=1.0, metavar="P",
                   help="sample only: nucleus mass in (0, 1] (default: 1.0)")
    g.add_argument("--beam-size", type=number(int, ge=1), default=5, metavar="N", help="beam only (default: 5)")
    g.add_argument("--length-penalty", type=number(float), default=0.0, metavar="ALPHA",
                   help="beam only: rank by log-prob / length^alpha (0 = plain log-prob; default: 0.0)")
    g.add_argument("--ban-unk", action="store_true", help="never produce <unk>")
    g.add_argument("--seed", type=number(int, ge=0, le=SEED_MAX), default=0, metavar="N",
                   help="seeds sampled codes and sampled decoding (default: 0)")


def register(sub) -> None:
    """Add the latent-space subcommands to `smim`'s subparsers."""
    p = sub.add_parser("export", help="training checkpoint -> model directory (config.json, model.safetensors, vocab.json)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--force", action="store_true", help="replace a model already in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reconstruct", help="(D) data, (M) mean, (R) sample, (P) perturbed reconstructions",
                       description="Reconstruct sentences as in the paper's Table 11: (M) from the posterior "
                                   "mean, (R) from z ~ q(z|x), (P) from z ~ N(mu, (scale sigma)^2).")
    _model_args(p)
    p.add_argument("sentences", nargs="+", help="whitespace-tokenised sentences")
    p.add_argument("--scale", type=number(float, ge=0), default=10.0, metavar="X",
                   help="(P): z ~ N(mu, (X sigma)^2), X >= 0 (paper: 10; default: 10.0)")
    p.add_argument("--ae", help="also show the (AE) row: mean reconstruction by this model")
    _decoding_args(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("sample", help="sentences decoded from z ~ N(0, std^2 I)")
    _model_args(p)
    p.add_argument("-n", type=number(int, ge=1), default=10, metavar="N", help="how many sentences (default: 10)")
    p.add_argument("--std", type=number(float, ge=0), default=0.1, metavar="S",
                   help="z ~ N(0, S^2 I), S >= 0 (paper: 0.1; default: 0.1)")
    _decoding_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("interpolate", help="decode equispaced codes between two sentences")
    _model_args(p)
    p.add_argument("a", help="the first sentence")
    p.add_argument("b", help="the second sentence")
    p.add_argument("--steps", type=number(int, ge=2), default=10, metavar="N",
                   help="points, both ends included, >= 2 (paper: 10; default: 10)")
    p.add_argument("--mean", action="store_true", help="interpolate posterior means instead of sampled codes")
    _decoding_args(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("encode", help="posterior means of every line of a file -> .npy")
    _model_args(p)
    p.add_argument("--input", required=True, metavar="FILE",
                   help="UTF-8 text file, one sentence a line; blank lines are skipped")
    p.add_argument("--output", required=True, metavar="FILE.npy", help=".npy of shape (sentences, latent_dim)")
    p.add_argument("--std-output", metavar="FILE.npy", help="also write the posterior stds here (.npy)")
    p.add_argument("--chunk-size", type=number(int, ge=1), default=10000, metavar="N",
                   help="lines held in memory at a time (default: 10000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("neighbors", help="nearest sentences of an index file in latent space")
    _model_args(p)
    p.add_argument("queries", nargs="+", help="sentences to find neighbours of")
    p.add_argument("--index", required=True, metavar="FILE", help="UTF-8 text file, one sentence a line")
    p.add_argument("--codes", metavar="FILE.npy",
                   help="the index's means from `smim encode` (skips encoding it again)")
    p.add_argument("-k", type=number(int, ge=1), default=5, metavar="K", help="neighbours per query (default: 5)")
    p.add_argument("--metric", default="l2", choices=("l2", "cosine"),
                   help="distance between posterior means: l2 (Euclidean) or cosine (default: l2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_neighbors)
