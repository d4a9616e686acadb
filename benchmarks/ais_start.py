"""Where AIS starts, under N(0, I) (issue #12): the prior, or the Gaussian fitted per sentence
(ais_fitted), whitened or not, widened or not. Prints the mean bound (nats/sentence, words +
<eos>) on N test sentences for each start, at T steps, with the same chains and fits.

    python benchmarks/ais_start.py MODEL --data-dir ../shared/data [--sentences 5] [--steps 50]
        [--chains 8] [--starts prior,fitted,fitted-identity,fitted-x2] [--threads 1] [--json OUT]

The fit is heldout's: 20 Adam steps x 2 samples on its ELBO from N(mean of q, (q's std x
--from-widen)^2), then std x 1 (the settings heldout chose on validation for sMIM (512) in
docs/evaluation.md). fitted-identity: HMC with the identity mass matrix instead of the fit's
stds; fitted-x2: the fitted std doubled.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from sentencemim.cli import _load_eval_split
from sentencemim.eval import ais as A
from sentencemim.eval import proposals as P
from sentencemim.eval.heldout import HeldoutConfig, _Run
from sentencemim.eval.priors import StdNormal
from sentencemim.modelio import load_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--sentences", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--from-widen", type=float, default=100.0)
    ap.add_argument("--starts", default="prior,fitted,fitted-identity,fitted-x2")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, info = load_model(args.model, "best", "cpu")
    model.eval()
    test = _load_eval_split(args.model, info, "test", args.data_dir, args.sentences, vocab)
    prior = StdNormal(model.cfg.latent_dim)
    run = _Run(model, prior, HeldoutConfig(ais_chains=args.chains), 100, info.get("train", {}).get("objective"),
               20, 2048, 0, "cpu", True, "fp32")
    run.chosen["gauss"] = ("widen", args.from_widen)
    fitted = run.ais_base("ais_fitted", "test")  # cached per sentences: every start uses the same fits
    starts = {"prior": (None, True), "fitted": (fitted, True), "fitted-identity": (fitted, False),
              "fitted-x2": (lambda b, sc: (lambda g: P.Gaussian(g.mean, g.logstd + math.log(2.0)))(fitted(b, sc)),
                            True)}
    out = {"model": args.model, "step": info.get("step"), "sentences": len(test), "steps": args.steps,
           "chains": args.chains, "fit": run.ais_base_what(), "results": {}}
    print(f"{args.model} at step {info.get('step')}: {len(test)} test sentences, T = {args.steps}, {args.chains} chains; "
          f"fit: {out['fit']}; nats/sentence, words + <eos>", flush=True)
    for name in args.starts.split(","):
        base, whiten = starts[name]
        t0 = time.perf_counter()
        r = A.ais(model, test, prior, args.steps, args.chains, 4, 5, 20, 2048, 0, "cpu", True, base=base, whiten=whiten)
        nll = -P.log_mean_exp(r["log_w"], 1)
        out["results"][name] = {"mean": float(nll.mean()), "per_sentence": nll.tolist(), "accept": r["accept"],
                                "time_s": time.perf_counter() - t0}
        print(f"  {name:<16} {nll.mean():10.3f}  acceptance {r['accept']:.2f}  {time.perf_counter() - t0:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
