"""Time and tightness of each held-out method (issue #12) on N test sentences.

For each prior (N(0, I) and the training aggregate posterior of M training sentences)
runs every method of sentencemim.eval.heldout on N test sentences of the model's corpus,
with settings chosen on V validation sentences, and prints per method: the bound
(nats/sentence, words + <eos>), nats gained over q-only IWAE_K (positive = tighter),
mean ESS, median Pareto k-hat, and wall time (validation grid + test pass).

    python benchmarks/heldout_methods.py RUN --data-dir ../shared/data [--sentences 200] [--k 100]
        [--methods q,prior,gauss,defensive,fitted,components,ais,ais_fitted] [--ais-steps 20,100] [--agg-prior-m 1000]
        [--valid 100] [--gradient-precision auto] [--threads 2] [--device cpu] [--json OUT]

Works on any run or model directory (tested on a tiny synthetic model in tests/test_heldout_cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from sentencemim.eval import bounds
from sentencemim.cli import _load_eval_split
from sentencemim.config import PRECISIONS
from sentencemim.eval.heldout import METHODS, HeldoutConfig, heldout_bounds
from sentencemim.modelio import load_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--sentences", type=int, default=200, help="test sentences (fixed subset, seed 0)")
    ap.add_argument("--valid", type=int, default=100, help="validation sentences for the settings")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ais-steps", default="20,100")
    ap.add_argument("--ais-chains", type=int, default=16)
    ap.add_argument("--gradient-precision", default="auto", choices=("auto", *PRECISIONS),
                    help="gradients that only steer: AIS's leapfrog, the fitted proposals (the weights are exact either way)")
    ap.add_argument("--agg-prior-m", type=int, default=1000, help="0 = N(0,I) only")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-rows", type=int, default=2048)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, info = load_model(args.model, "best", args.device)
    model.eval()
    test = _load_eval_split(args.model, info, "test", args.data_dir, args.sentences, vocab)
    valid = _load_eval_split(args.model, info, "valid", args.data_dir, args.valid, vocab)
    cfg = HeldoutConfig(heldout_methods=args.methods, heldout_test="all", heldout_valid=args.valid, ais_steps=args.ais_steps,
                        ais_chains=args.ais_chains, gradient_precision=args.gradient_precision)
    cfg.validate()
    priors = [None]
    if args.agg_prior_m:
        train = _load_eval_split(args.model, info, "train", args.data_dir, 0, vocab)
        priors.append(bounds.training_prior(model, train, args.agg_prior_m, 0, device=args.device))
    out = {"model": args.model, "step": info.get("step"), "sentences": len(test), "valid": len(valid), "k": args.k,
           "threads": torch.get_num_threads(), "results": []}
    print(f"{args.model} at step {info.get('step')}: {len(test)} test sentences, {len(valid)} validation sentences, K = {args.k}, "
          f"{torch.get_num_threads()} thread(s); NLL bounds in nats/sentence, words + <eos>", flush=True)
    for agg in priors:
        t0 = time.perf_counter()
        res = heldout_bounds(model, test, valid, agg, cfg, args.k, info.get("train", {}).get("objective"),
                             max_rows=args.max_rows, device=args.device, progress=True,
                             valid_what=f"{len(valid)} valid sentences")
        q = res["methods"].get("q", {}).get("nll_per_sentence")
        print(f"\nprior {res['prior']} (chosen on validation: {res['chosen']}; {time.perf_counter() - t0:.0f} s)")
        print(f"  {'method':<11} {'bound':>10} {'gain vs q':>10} {'ESS':>7} {'k-hat':>6} {'time s':>7}  settings")
        for name, m in res["methods"].items():
            gain = float("nan") if q is None else q - m["nll_per_sentence"]
            print(f"  {name:<11} {m['nll_per_sentence']:>10.3f} {gain:>+10.3f} {m['ess_mean']:>7.1f} "
                  f"{m['khat_median']:>6.2f} {m['time_s']:>7.1f}  {m['settings']}", flush=True)
            out["results"].append({"prior": res["prior"], "method": name, "gain_vs_q": gain,
                                   **{k: v for k, v in m.items() if k != "valid_grid"}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
