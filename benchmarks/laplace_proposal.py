"""A Laplace approximation as the importance-sampling proposal under N(0, I) (issue #12 names
it beside the fitted Gaussian): is the posterior of a 512-d sMIM close enough to a Gaussian
for importance sampling from one to converge?

Per sentence: the mode z* of log N(z; 0, I) + log p(x|z) (Adam from q's mean), the full
Hessian H of the negative log joint there (torch.autograd.functional.hessian, D^2 entries;
eigenvalues below --eig-floor raised to it: with the default 1, the prior's own curvature, no
direction of the proposal is wider than the prior), then importance sampling from
N(z*, s^2 H^-1) for each inflation s, K samples: the bound -log (1/K) sum w at K = 10, 100,
... and the ESS. Also printed: the Laplace estimate itself, f(z*) - (D/2) log 2 pi +
(1/2) log det H, which is *not* a bound. nats/sentence, words + <eos>.

    python benchmarks/laplace_proposal.py MODEL --data-dir ../shared/data [--sentences 2]
        [--k 1000] [--inflations 1,1.2,1.5] [--mode-steps 150] [--lm LM_RUN] [--threads 1] [--json OUT]

--lm: a GRU language model (objective lm) whose exact NLL on the same sentences is printed beside.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from sentencemim.cli import _load_eval_split
from sentencemim.data import collate
from sentencemim.modelio import load_model

LOG_2PI = math.log(2 * math.pi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--sentences", type=int, default=2)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--inflations", default="1,1.2,1.5")
    ap.add_argument("--mode-steps", type=int, default=150)
    ap.add_argument("--mode-lr", type=float, default=0.02)
    ap.add_argument("--eig-floor", type=float, default=1.0)
    ap.add_argument("--lm", help="a language-model run or model directory: its exact NLL on the same sentences")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, info = load_model(args.model, "best", "cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = _load_eval_split(args.model, info, "test", args.data_dir, args.sentences, vocab)
    inflations = [float(s) for s in args.inflations.split(",")]
    ks = [k for k in (10, 100, 1000, 10000) if k < args.k] + [args.k]
    out = {"model": args.model, "step": info.get("step"), "sentences": len(test), "k": args.k,
           "mode": f"Adam lr {args.mode_lr}, {args.mode_steps} steps from q's mean", "eig_floor": args.eig_floor,
           "what": "IS from N(z*, s^2 H^-1), H the Hessian of -log N(z) - log p(x|z) at its mode z*; "
                   "nats/sentence, words + <eos>", "per_sentence": []}
    print(f"{args.model} at step {info.get('step')}: {len(test)} test sentences, K = {args.k}", flush=True)
    lm_nll = None
    if args.lm:
        from sentencemim.eval.evaluate import evaluate_lm
        lm, lm_vocab, lm_info = load_model(args.lm, "best", "cpu")
        if lm_vocab.itos != vocab.itos:
            raise SystemExit("--lm: the language model's vocabulary differs from the model's")
        lm_nll = evaluate_lm(lm, test)["per_sentence"]["nll"]
        out["lm"] = {"model": args.lm, "step": lm_info.get("step"), "nll": lm_nll.tolist(),
                     "what": "exact -log p(x) of the GRU language model on the same sentences"}
    for i in range(len(test)):
        row = laplace_is(model, test.seqs[i], inflations, ks, args.mode_steps, args.mode_lr, args.eig_floor, seed=i)
        out["per_sentence"].append(row)
        print(f"sentence {i} ({row['tokens']} tokens): " + (f"LM exact NLL {lm_nll[i]:.2f}; " if lm_nll is not None else "")
              + f"Laplace estimate {row['laplace_estimate_not_a_bound']:.2f} (not a bound); Hessian eigenvalues "
              f"{row['eig_min']:.3g}..{row['eig_max']:.3g} ({row['eigs_below_floor']} below {args.eig_floor}); "
              f"gradient norm at z* {row['grad_norm_at_mode']:.3g}; "
              f"{row['seconds']:.0f} s", flush=True)
        for s, r in row["is"].items():
            print(f"  IS from N(z*, ({s})^2 H^-1): " + ", ".join(f"K={k} {v:.2f}" for k, v in r["bound"].items())
                  + f"; ESS {r['ess']:.2f} of {args.k}", flush=True)
    for s in inflations:
        b = np.mean([r["is"][str(s)]["bound"][str(args.k)] for r in out["per_sentence"]])
        print(f"mean over sentences, inflation {s}: bound K={args.k} {b:.2f}"
              + (f" (LM exact NLL {lm_nll.mean():.2f})" if lm_nll is not None else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def laplace_is(model, seq, inflations, ks, mode_steps=150, mode_lr=0.02, eig_floor=1.0, seed=0,
               rows_per_pass=100) -> dict:
    """One sentence (token ids, no specials): the mode, the Hessian, and IS from N(z*, s^2 H^-1)
    for each inflation s, with the bound at each K in ks (the last is the sample count)."""
    t0 = time.perf_counter()
    D = model.cfg.latent_dim
    dtype = next(model.parameters()).dtype

    def neg_log_joint(z):  # (n, D) -> (n,): -log N(z; 0, I) - log p(x|z)
        n = z.shape[0]
        b = collate([seq] * n, list(range(n)))
        rec, _ = model.token_nll(b.dec_in, b.dec_tgt, b.lengths, z)
        return rec + 0.5 * (z ** 2).sum(1) + 0.5 * D * LOG_2PI

    one = collate([seq], [0])
    with torch.no_grad():
        mu, _ = model.encode(one.enc_in, one.lengths)
    z = mu.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=mode_lr)
    for _ in range(mode_steps):
        opt.zero_grad()
        neg_log_joint(z).sum().backward()
        opt.step()
    z = z.detach().requires_grad_(True)
    f = neg_log_joint(z)[0]
    grad_norm = float(torch.autograd.grad(f, z)[0].norm())  # 0 at a true mode
    z, f_mode = z.detach(), float(f.detach())
    t1 = time.perf_counter()
    H = torch.autograd.functional.hessian(lambda v: neg_log_joint(v[None])[0], z[0], vectorize=True)
    ev, U = torch.linalg.eigh((0.5 * (H + H.T)).double())
    hess_s = time.perf_counter() - t1
    evc = ev.clamp(min=eig_floor)
    row = {"tokens": len(seq) + 1, "neg_log_joint_at_mode": f_mode,
           "laplace_estimate_not_a_bound": f_mode - 0.5 * D * LOG_2PI + 0.5 * float(torch.log(evc).sum()),
           "eig_min": float(ev.min()), "eig_max": float(ev.max()), "eigs_below_floor": int((ev < eig_floor).sum()),
           "grad_norm_at_mode": grad_norm,
           "hessian_s": hess_s, "is": {}}
    K = ks[-1]
    for s in inflations:
        std = s / evc.sqrt()  # along H's eigenvectors
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(K, D, generator=g, dtype=torch.float64)
        zs = z.double() + (eps * std) @ U.T
        log_r = -0.5 * (eps ** 2).sum(1) - torch.log(std).sum() - 0.5 * D * LOG_2PI
        with torch.no_grad():
            f = torch.cat([neg_log_joint(zs[j:j + rows_per_pass].to(dtype)).double()
                           for j in range(0, K, rows_per_pass)])
        log_w = -f - log_r
        w = torch.exp(log_w - log_w.max())
        row["is"][str(s)] = {"bound": {str(k): float(-(torch.logsumexp(log_w[:k], 0) - math.log(k))) for k in ks},
                             "ess": float(w.sum() ** 2 / (w ** 2).sum())}
    row["seconds"] = time.perf_counter() - t0
    return row


if __name__ == "__main__":
    raise SystemExit(main())
