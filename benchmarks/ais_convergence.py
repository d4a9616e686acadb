"""How far AIS is from converged on a model's test sentences (issue #12): the mean AIS bound
on the NLL at each step count T, per sentence too, beside a language model's exact NLL on
the same sentences.

AIS from the prior (N(0, I)) with HMC, as `smim evaluate --heldout-methods ais` runs it, but
on a few sentences and without the validation pass, so that long schedules fit on a CPU:
each T is its own run (same seed, so the runs share their random numbers as far as they go),
and each is an upper bound on -log p(x) in expectation. A bound still falling steeply with T has not
converged; the LM's exact NLL is a reference, not a limit (the latent model may be better
or worse than the LM).

    python benchmarks/ais_convergence.py MODEL --data-dir ../shared/data --sentences 3 \
        --steps 100,500,2000 --chains 4 [--lm LM_RUN] [--gradient-precision auto] [--threads 1] \
        [--device cpu] [--json OUT]

MODEL and LM_RUN: run or model directories (their best checkpoint). The sentences are the
fixed random subset of seed 0 that `--max-sentences N` selects everywhere in the project.
Tested on a tiny synthetic model in tests/test_heldout_cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from sentencemim.cliargs import number
from sentencemim.config import PRECISIONS
from sentencemim.corpora import load_eval_split
from sentencemim.eval.ais import ais
from sentencemim.eval.evaluate import evaluate_lm
from sentencemim.eval.priors import make_prior
from sentencemim.eval.proposals import log_mean_exp
from sentencemim.eval.scoring import resolve_gradient_precision
from sentencemim.modelio import load_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--sentences", type=number(int, 1), default=3, help="test sentences (fixed subset, seed 0)")
    ap.add_argument("--steps", default="100,500", help="AIS step counts T, one run each")
    ap.add_argument("--chains", type=number(int, 1), default=4)
    ap.add_argument("--pilot", type=number(int, 0), default=2, help="chains that only adapt the HMC step size")
    ap.add_argument("--leapfrog", type=number(int, 1), default=5)
    ap.add_argument("--lm", help="a language-model run (objective lm): its exact NLL on the same sentences")
    ap.add_argument("--gradient-precision", default="auto", choices=("auto", *PRECISIONS),
                    help="what HMC's leapfrog moves with (the weights and the Metropolis test are exact float32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=number(int, 0), default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    try:
        steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--steps takes comma-separated integers, not {args.steps!r}")
    if not steps or min(steps) < 1:
        ap.error("--steps needs at least one step count >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, info = load_model(args.model, "best", args.device)
    if not model.has_latent:
        ap.error(f"{args.model} has no latent (objective lm): nothing to anneal")
    ds = load_eval_split(args.model, info, "test", args.data_dir, args.sentences, vocab)
    grad = resolve_gradient_precision(args.gradient_precision, args.device)
    prior = make_prior(None, model.cfg.latent_dim, args.device)
    out = {"model": args.model, "step": info.get("step"), "sentences": len(ds), "chains": args.chains,
           "pilot_chains": args.pilot, "leapfrog": args.leapfrog, "gradient": grad, "threads": torch.get_num_threads(),
           "prior": "N(0,I)", "unit": "nats per sentence, words + <eos>", "runs": []}
    lm_nll = None
    if args.lm:
        lm, lm_vocab, lm_info = load_model(args.lm, "best", args.device)
        if lm.has_latent:
            ap.error(f"--lm {args.lm} has a latent: give a language-model run (objective lm)")
        lm_ds = load_eval_split(args.lm, lm_info, "test", args.data_dir, args.sentences, lm_vocab)
        words = [vocab.decode(x) for x in ds.seqs]
        if [lm_vocab.decode(x) for x in lm_ds.seqs] != words:
            ap.error(f"--lm {args.lm} reads other test sentences than {args.model} (another corpus or vocabulary)")
        lm_nll = evaluate_lm(lm, lm_ds, device=args.device)["per_sentence"]["nll"]
        out.update(lm=args.lm, lm_step=lm_info.get("step"), lm_nll=lm_nll.tolist(), lm_nll_mean=float(lm_nll.mean()))
    print(f"{args.model} at step {info.get('step')}: AIS from N(0, I) on {len(ds)} test sentences, {args.chains} chains "
          f"(+{args.pilot} pilots), {args.leapfrog} leapfrog steps moved by the {grad} gradient, "
          f"{torch.get_num_threads()} thread(s); upper bounds on the NLL in expectation, nats/sentence, words + <eos>"
          + (f"; LM {args.lm} (step {out['lm_step']}) exact NLL {lm_nll.mean():.2f}" if lm_nll is not None else ""),
          flush=True)
    for T in steps:
        t0 = time.perf_counter()
        res = ais(model, ds, prior, T, args.chains, args.pilot, args.leapfrog, seed=args.seed, device=args.device,
                  progress=True, hmc_gradient=grad)
        per = -log_mean_exp(res["log_w"], 1)
        secs = time.perf_counter() - t0
        out["runs"].append({"steps": T, "nll_mean": float(per.mean()), "nll": per.tolist(), "accept": res["accept"],
                            "time_s": secs})
        print(f"T = {T:>6}: {per.mean():9.2f}  per sentence {np.array2string(per, precision=1, separator=', ')}"
              + (f"  (LM {np.array2string(lm_nll, precision=1, separator=', ')})" if lm_nll is not None else "")
              + f"  acceptance {res['accept']:.2f}, {secs:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
