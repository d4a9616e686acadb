"""`smim` subcommands for watching and showing models (issue #15):

    smim serve MODEL [--index FILE] [--host 127.0.0.1] [--port 8000]   the latent space in a browser
    smim curves RUN... --out FILE.png [--x step|epoch]                  validation curves of runs

Nothing heavy is imported here (torch, fastapi, matplotlib): each command imports
what it needs when it runs, so `smim --help` stays fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from .cliargs import device_type, number
from .errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAP_POINTS, MAX_BODY_KB, RATE_LIMIT, BURST = 5000, 64, 10.0, 20


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("smim serve needs the serve extra: pip install 'sentencemim[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_body_kb <= 0 or not (math.isfinite(args.rate_limit) and args.rate_limit >= 0) or args.burst < 1:
        raise UserError("--max-body-kb must be > 0, --rate-limit a number >= 0 (0 = off), --burst >= 1")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    from .api import SentenceMIM, load_index
    from .serve.app import create_app
    from .serve.latentmap import build_map
    from .serve.ops import Service
    if args.codes and not args.index:
        raise UserError("--codes needs --index (the sentences the codes belong to)")
    m = SentenceMIM.from_pretrained(args.model, args.checkpoint, args.device, lowercase=args.lowercase)
    lm = None
    if args.index:
        sentences, codes = load_index(m, args.index, args.codes, progress=True)
        lm = build_map(sentences, codes, args.projection, args.map_points, args.seed)
        print(f"index: {lm.what}", file=sys.stderr)
    name = Path(args.model).resolve().name if Path(args.model).exists() else str(args.model)  # a dir or a repo id
    app = create_app(Service(m, lm, name), max_body=args.max_body_kb * 1024, rate=args.rate_limit,
                     burst=args.burst)
    if args.host not in LOOPBACK:
        print(f"note: serving on {args.host}: anyone who can reach this address can use the model "
              f"(there is no authentication)", file=sys.stderr)
    print(f"serving {args.model} at http://{args.host}:{args.port}/ (JSON API under /api/, "
          f"OpenAPI at /openapi.json); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_curves(args) -> int:
    from .curves import plot_curves
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    out = plot_curves(args.runs, args.out, x=args.x, metrics=metrics, labels=args.label, title=args.title,
                      out_name="--out")
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="a local web app over one model: reconstruct, interpolate, sample, QA, "
                                     "latent map (extra: serve)",
                       description="Serve one model in the browser and as a JSON API (OpenAPI at /openapi.json). "
                                   "Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("model", help="model directory, run directory, checkpoint file or Hugging Face Hub repo id")
    p.add_argument("--index", help="text file, one sentence a line: the latent map and nearest neighbours")
    p.add_argument("--codes", help="the index's posterior means from `smim encode` (skips encoding it at start)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number(int, ge=0, le=65535), default=8000, metavar="N",
                   help="port to listen on (0 = any free port; default 8000)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="for a run directory")
    p.add_argument("--device", default="auto", type=device_type,
                   help="auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--lowercase", action="store_true", help="lowercase typed sentences (PTB is lowercase)")
    p.add_argument("--projection", default="auto", choices=("auto", "pca", "umap"),
                   help="2-D map of the index: PCA (numpy), UMAP (extra umap), auto = UMAP when installed")
    p.add_argument("--map-points", type=number(int, ge=1), default=MAP_POINTS, metavar="N",
                   help="at most this many index sentences on the map (a seeded random subset)")
    p.add_argument("--seed", type=number(int, ge=0), default=0, metavar="N", help="the map's subset and UMAP")
    p.add_argument("--max-body-kb", type=number(int, ge=1), default=MAX_BODY_KB, metavar="N",
                   help="largest request body accepted, in KiB")
    p.add_argument("--rate-limit", type=number(float, ge=0.0), default=RATE_LIMIT, metavar="X",
                   help="API requests per second per client (0 = no limit)")
    p.add_argument("--burst", type=number(int, ge=1), default=BURST, metavar="N",
                   help="requests a client may send at once")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default: info)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("curves", help="validation curves of runs from their metrics.jsonl -> PNG (extra: plot)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="training run directories")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--x", default="step", choices=("step", "epoch"),
                   help="the x axis: optimizer steps or epochs (default: step)")
    p.add_argument("--metrics", default="loss,rec_per_sentence,lr",
                   help="comma-separated keys of the valid records: loss, rec_per_sentence, kl_per_sentence, "
                        "ppl_rec_words_eos, lr, active_units, mutual_information")
    p.add_argument("--label", action="append", help="a legend label per run, in order (repeat)")
    p.add_argument("--title", help="the figure's title (default: none)")
    p.set_defaults(func=cmd_curves)

