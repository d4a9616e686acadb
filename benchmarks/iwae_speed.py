"""Time the IWAE bound (K importance samples per sentence) on a test split.

Runs `bounds.importance_weights` (the code behind `smim evaluate`'s IWAE and ELBO rows)
over the whole split with the evaluation scorer in float32 and, optionally, bfloat16,
and times the previous per-row path (`SentenceAE.token_nll` on every (sample,
sentence) row) on a subset for comparison. Prints wall time, token-samples/s
(tokens = words + <eos>; one token-sample = one token scored under one z) and the
resulting -IWAE_K per sentence, so the numbers of the paths can be compared.

    python benchmarks/iwae_speed.py MODEL --data-dir ../shared/data [--k 100] [--threads 2]
        [--precisions fp32,bf16] [--reference-sentences 200] [--max-sentences 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from sentencemim.eval import bounds
from sentencemim.cli import _load_eval_split
from sentencemim.modelio import load_model


def reference_path(model, ds, k, batch_size=20, max_rows=512, seed=0):
    """The pre-scorer implementation: every (sample, sentence) row through token_nll."""
    gen = torch.Generator().manual_seed(seed)
    rec_all = np.zeros((len(ds), k))
    with torch.no_grad():
        for idx in ds.eval_batches(batch_size):
            b = ds.batch(idx)
            B = b.size
            mu, logvar = model.encode(b.enc_in, b.lengths)
            c = max(1, min(k, max_rows // B))
            for s in range(0, k, c):
                n = min(c, k - s)
                eps = torch.randn((n, B, mu.shape[1]), generator=gen, dtype=mu.dtype)
                z = (mu + eps * torch.exp(0.5 * logvar)).reshape(n * B, -1)
                rec, _ = model.token_nll(b.dec_in.repeat(n, 1), b.dec_tgt.repeat(n, 1), b.lengths.repeat(n), z)
                rec_all[np.asarray(idx), s:s + n] = rec.double().numpy().reshape(n, B).T
    return rec_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data-dir")
    ap.add_argument("--split", default="test")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--max-sentences", type=int, default=0, help="0 = the whole split")
    ap.add_argument("--reference-sentences", type=int, default=200, help="subset for the old path (0 = skip)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, info = load_model(args.model)
    model.eval()
    ds = _load_eval_split(args.model, info, args.split, args.data_dir, args.max_sentences, vocab)
    tokens = ds.num_tokens  # words + <eos>
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    out = {"model": args.model, "latent_dim": model.cfg.latent_dim, "hidden_dim": model.cfg.hidden_dim,
           "vocab": model.cfg.vocab_size, "split": args.split, "sentences": len(ds), "tokens_words_eos": tokens,
           "k": args.k, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "commit": commit,
           "onednn": torch.backends.mkldnn.is_available(), "runs": []}
    print(f"{len(ds)} {args.split} sentences, {tokens} tokens (words + <eos>), K = {args.k}, "
          f"{torch.get_num_threads()} thread(s), latent {model.cfg.latent_dim}", flush=True)
    results = {}
    for precision in [p for p in args.precisions.split(",") if p]:
        t0 = time.perf_counter()
        w = bounds.importance_weights(model, ds, args.k, seed=0, precision=precision, progress=True)
        dt = time.perf_counter() - t0
        nll = bounds.iwae_nll(w["rec"], w["log_q"], w["log_p"])
        results[precision] = w["rec"]
        row = {"path": f"scorer {precision}", "sentences": len(ds), "seconds": dt,
               "token_samples_per_s": tokens * args.k / dt, "iwae_nll_per_sentence": float(nll.mean())}
        out["runs"].append(row)
        print(f"scorer {precision}: {dt:.1f} s ({dt / 60:.1f} min), {tokens * args.k / dt:,.0f} token-samples/s, "
              f"-IWAE_{args.k} under N(0,I) {nll.mean():.3f} nats/sentence", flush=True)
    if "fp32" in results and "bf16" in results:
        d = results["bf16"] - results["fp32"]
        out["bf16_minus_fp32_rec"] = {"mean": float(d.mean()), "std": float(d.std()), "max_abs": float(np.abs(d).max())}
        print(f"bf16 - fp32, -log p(x|z) per (sentence, sample): mean {d.mean():+.4f}, std {d.std():.4f}, "
              f"max |.| {np.abs(d).max():.4f} nats", flush=True)
    if args.reference_sentences:
        sub = ds.subset(args.reference_sentences, 0)
        sub_tokens = sub.num_tokens
        t0 = time.perf_counter()
        ref = reference_path(model, sub, args.k)
        dt = time.perf_counter() - t0
        row = {"path": "token_nll per row (previous)", "sentences": len(sub), "seconds": dt,
               "token_samples_per_s": sub_tokens * args.k / dt}
        w = bounds.importance_weights(model, sub, args.k, seed=0)
        row["max_abs_diff_vs_scorer_fp32"] = float(np.abs(w["rec"] - ref).max())
        out["runs"].append(row)
        print(f"previous path on {len(sub)} sentences: {dt:.1f} s, {sub_tokens * args.k / dt:,.0f} token-samples/s "
              f"(projected for the split: {tokens * args.k / row['token_samples_per_s'] / 60:.1f} min); "
              f"max |diff| vs scorer fp32 {row['max_abs_diff_vs_scorer_fp32']:.2e} nats", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
