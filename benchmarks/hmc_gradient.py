"""AIS with HMC moved by the exact float32 gradient against the bfloat16 surrogate (issue #12).

The surrogate changes only the moves: the Metropolis test and the weights use exact float32
values, so both give valid bounds (tests/test_heldout_exact.py checks both against
quadrature). This prints, for each, the wall time, the mean bound (nats/sentence, words +
<eos>), the acceptance rate of the estimate chains and the mean step size the pilot chains
chose, on the first N test sentences, from the prior (N(0, I)), with the same seed. The two
runs follow each other, so on a shared machine a change of load between them shows in their
times; `--transitions R` first times the decoder work of one HMC transition on one batch
(fp32: `leapfrog` exact value-and-gradient passes; bf16: as many bf16 gradient passes plus one
exact value pass), the two alternating R times, and prints the median ratio, which such load
changes do not bias.

    python benchmarks/hmc_gradient.py MODEL --data-dir ../shared/data [--sentences 20] [--steps 10]
        [--chains 8] [--pilots 4] [--leapfrog 5] [--threads 1] [--gradients fp32,bf16] [--transitions 10]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sentencemim.cli import _load_eval_split
from sentencemim.data import Dataset
from sentencemim.errors import UserError
from sentencemim.eval import ais as A
from sentencemim.eval.priors import StdNormal
from sentencemim.eval.proposals import log_mean_exp
from sentencemim.eval.scoring import bf16_problem, resolve_gradient_precision
from sentencemim.modelio import load_model


def time_transition(model, ds, rows_per_sentence: int, leapfrog: int, repeats: int) -> dict:
    """Paired timings of one HMC transition's decoder work on the first batch (up to 20
    sentences x rows_per_sentence codes): fp32 = `leapfrog` exact nll_grad passes; bf16 =
    `leapfrog` bf16 nll_grad passes + one exact nll pass (what ais.py runs)."""
    from sentencemim.eval.scoring import Scorer
    b = ds.batch(list(range(min(20, len(ds)))))
    z = torch.randn(rows_per_sentence, b.size, model.cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    exact, fast = Scorer(model, "fp32"), Scorer(model, "bf16")

    def fp32():
        for _ in range(leapfrog):
            exact.nll_grad(b.dec_in, b.dec_tgt, z)

    def bf16():
        for _ in range(leapfrog):
            fast.nll_grad(b.dec_in, b.dec_tgt, z)
        exact.nll(b.dec_in, b.dec_tgt, z)

    times = {"fp32": [], "bf16": []}
    fp32(), bf16()  # warm-up
    for _ in range(repeats):
        for name, f in (("fp32", fp32), ("bf16", bf16)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    ratios = np.array(times["fp32"]) / np.array(times["bf16"])
    return {"rows": rows_per_sentence * b.size, "repeats": repeats, "fp32_s": times["fp32"], "bf16_s": times["bf16"],
            "fp32_median_s": float(np.median(times["fp32"])), "bf16_median_s": float(np.median(times["bf16"])),
            "ratio_median": float(np.median(ratios))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--sentences", type=int, default=20, help="the first N test sentences")
    ap.add_argument("--steps", type=int, default=10, help="annealing steps T")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--pilots", type=int, default=4)
    ap.add_argument("--leapfrog", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gradients", default="fp32,bf16", help="the AIS runs to compare ('' = none)")
    ap.add_argument("--transitions", type=int, default=0, help="alternating timings of one transition's decoder work")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        grads = [resolve_gradient_precision(g.strip(), "cpu") for g in args.gradients.split(",") if g.strip()]
        model, vocab, info = load_model(args.model, "best", "cpu")
        model.eval()
        ds = _load_eval_split(args.model, info, "test", args.data_dir, 0, vocab)
    except UserError as e:
        raise SystemExit(f"error: {e}")
    ds = Dataset(ds.seqs[:args.sentences])
    print(f"{args.model} at step {info.get('step')}: AIS from N(0, I), first {len(ds)} test sentences, "
          f"T = {args.steps}, {args.chains} chains + {args.pilots} pilots, {args.leapfrog} leapfrog steps, "
          f"{torch.get_num_threads()} thread(s); bound in nats/sentence, words + <eos>", flush=True)
    out = {"model": args.model, "step": info.get("step"), "sentences": len(ds), "steps": args.steps,
           "chains": args.chains, "pilots": args.pilots, "leapfrog": args.leapfrog,
           "threads": torch.get_num_threads(), "results": []}
    if args.transitions and bf16_problem("cpu"):
        print(f"  no transition timings: {bf16_problem('cpu')}", flush=True)
    elif args.transitions:
        out["transition"] = time_transition(model, ds, args.chains + args.pilots, args.leapfrog, args.transitions)
        t = out["transition"]
        print(f"  one transition's decoder work on {t['rows']} rows, alternating x{args.transitions}: fp32 median "
              f"{t['fp32_median_s']:.2f} s, bf16 median {t['bf16_median_s']:.2f} s; bf16 is {t['ratio_median']:.2f}x "
              f"faster (median of the paired ratios)", flush=True)
    for g in grads:
        t0 = time.perf_counter()
        r = A.ais(model, ds, StdNormal(model.cfg.latent_dim), args.steps, args.chains, args.pilots, args.leapfrog,
                  max_rows=4096, seed=0, hmc_gradient=g)
        wall = time.perf_counter() - t0
        bound = -log_mean_exp(r["log_w"], 1)
        row = {"hmc_gradient": g, "time_s": wall, "bound": float(bound.mean()), "accept": r["accept"],
               "eps_mean": float(np.mean(r["eps_steps"]))}
        out["results"].append(row)
        print(f"  {g:<5} {wall:8.1f} s   bound {row['bound']:10.3f}   accept {row['accept']:.3f}   "
              f"mean step {row['eps_mean']:.4f}", flush=True)
    if len(out["results"]) == 2:
        a, b = out["results"]
        print(f"  {b['hmc_gradient']} / {a['hmc_gradient']}: {a['time_s'] / b['time_s']:.2f}x faster, "
              f"bounds differ by {b['bound'] - a['bound']:+.3f} nats/sentence")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
