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

import numpy as np

from .errors import UserError


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _load(path, args):
    from .api import SentenceMIM
    return SentenceMIM.from_pretrained(path, args.checkpoint, args.device, lowercase=args.lowercase,
                                       batch_size=_positive(args.batch_size, "--batch-size"), on_oov=_note)


def _positive(v, name) -> int:
    if v < 1:
        raise UserError(f"{name} must be a positive integer, got {v}")
    return v


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
    for s in m.sample(_positive(args.n, "-n"), args.std, seed=args.seed, **_decode_kwargs(args)):
        print(s)
    return 0


def cmd_interpolate(args) -> int:
    m = _load(args.model, args)
    steps = args.steps
    if steps < 2:
        raise UserError(f"--steps must be >= 2 (both ends are included), got {steps}")
    texts = m.interpolate(args.a, args.b, steps, "mean" if args.mean else "sample", seed=args.seed,
                          **_decode_kwargs(args))
    for i, s in enumerate(texts):
        print(f"{i / (steps - 1):.2f}  {s}")
    return 0


def cmd_encode(args) -> int:
    m = _load(args.model, args)
    if not str(args.output).endswith(".npy"):
        raise UserError(f"--output must name a .npy file, got {args.output}")
    rep = m.encode_file(args.input, args.output, args.std_output, chunk_size=_positive(args.chunk_size, "--chunk-size"),
                        progress=not args.quiet)
    print(f"{rep['path']}: {rep['lines']} lines, {rep['sentences']} encoded, {rep['empty']} blank skipped; "
          f"wrote {args.output} ({rep['sentences']} x {m.latent_dim} float32 posterior means)"
          + (f" and {args.std_output} (stds)" if args.std_output else ""), file=sys.stderr)
    return 0


def cmd_neighbors(args) -> int:
    from .api import iter_nonempty_lines, nearest
    m = _load(args.model, args)
    k = _positive(args.k, "-k")
    lines = [text for _, text in iter_nonempty_lines(args.index)]
    if not lines:
        raise UserError(f"{args.index}: no non-blank lines to search")
    if args.codes:
        try:
            codes = np.load(args.codes, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{args.codes}: not a readable .npy file ({e})") from None
        if codes.shape != (len(lines), m.latent_dim):
            raise UserError(f"{args.codes}: shape {codes.shape} does not match {len(lines)} non-blank lines of "
                            f"{args.index} x latent size {m.latent_dim}; re-run smim encode on that file")
    else:
        codes = m.encode_file(args.index, progress=not args.quiet)["mean"]
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
def _model_args(p: argparse.ArgumentParser, name: str = "model") -> None:
    p.add_argument(name, help="model directory, run directory or checkpoint file")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="for a run directory")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (a GPU when there is one)")
    p.add_argument("--lowercase", action="store_true", help="lowercase input sentences (PTB is lowercase)")
    p.add_argument("--batch-size", type=int, default=100)


def _decoding_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--method", default="greedy", choices=("greedy", "sample", "beam"))
    g.add_argument("--max-len", type=int, default=100, help="tokens per sentence at most")
    g.add_argument("--temperature", type=float, default=1.0, help="sample only")
    g.add_argument("--top-k", type=int, default=0, help="sample only: keep the k likeliest tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=1.0, help="sample only: nucleus mass")
    g.add_argument("--beam-size", type=int, default=5, help="beam only")
    g.add_argument("--length-penalty", type=float, default=0.0,
                   help="beam only: rank by log-prob / length^alpha (0 = plain log-prob)")
    g.add_argument("--ban-unk", action="store_true", help="never produce <unk>")
    g.add_argument("--seed", type=int, default=0, help="seeds sampled codes and sampled decoding")


def register(sub) -> None:
    """Add the latent-space subcommands to `smim`'s subparsers."""
    p = sub.add_parser("export", help="training checkpoint -> model directory (config.json, model.safetensors, vocab.json)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--force", action="store_true", help="replace a model already in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reconstruct", help="(D) data, (M) mean, (R) sample, (P) perturbed reconstructions",
                       description="Reconstruct sentences as in the paper's Table 11: (M) from the posterior "
                                   "mean, (R) from z ~ q(z|x), (P) from z ~ N(mu, (scale sigma)^2).")
    _model_args(p)
    p.add_argument("sentences", nargs="+", help="whitespace-tokenised sentences")
    p.add_argument("--scale", type=float, default=10.0, help="(P): times the posterior std (paper: 10)")
    p.add_argument("--ae", help="also show the (AE) row: mean reconstruction by this model")
    _decoding_args(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("sample", help="sentences decoded from z ~ N(0, std^2 I)")
    _model_args(p)
    p.add_argument("-n", type=int, default=10, help="how many")
    p.add_argument("--std", type=float, default=0.1, help="prior std (paper: 0.1)")
    _decoding_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("interpolate", help="decode equispaced codes between two sentences")
    _model_args(p)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--steps", type=int, default=10, help="points, both ends included (paper: 10)")
    p.add_argument("--mean", action="store_true", help="interpolate posterior means instead of sampled codes")
    _decoding_args(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("encode", help="posterior means of every line of a file -> .npy")
    _model_args(p)
    p.add_argument("--input", required=True, help="text file, one sentence a line; blank lines are skipped")
    p.add_argument("--output", required=True, help=".npy of shape (sentences, latent_dim)")
    p.add_argument("--std-output", help="also write the posterior stds here")
    p.add_argument("--chunk-size", type=int, default=10000, help="lines held in memory at a time")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("neighbors", help="nearest sentences of an index file in latent space")
    _model_args(p)
    p.add_argument("queries", nargs="+")
    p.add_argument("--index", required=True, help="text file, one sentence a line")
    p.add_argument("--codes", help="the index's means from `smim encode` (skips encoding it again)")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--metric", default="l2", choices=("l2", "cosine"),
                   help="distance between posterior means")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_neighbors)
