"""Training throughput of the PTB models on real PTB batches.

Prints real tokens/s (words + <eos>; padding not counted) and peak memory for
latent 16 / 128 / 512 at batch 20 and a larger batch, for sentencemim's training
step and for a plain PyTorch loop over the same model (random batches, full
softmax over padded positions with ignore_index) as a reference.

    python benchmarks/throughput.py --data-dir ../shared/data [--steps 40] [--plain] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.data import Dataset
from sentencemim.errors import UserError
from sentencemim.model import SentenceAE, log_normal, log_std_normal
from sentencemim.train import load_corpus_splits, make_optimizer


def plain_step(model, b, opt):
    """The textbook loop: project every position (pads too) and ignore pads in the loss."""
    mu, logvar = model.encode(b.enc_in, b.lengths)
    z = model.reparameterize(mu, logvar)
    logits, _ = model.logits(b.dec_in, z)  # (B, T, V)
    nll = F.cross_entropy(logits.transpose(1, 2), b.dec_tgt, ignore_index=0, reduction="none").sum(1)
    loss = (nll - 0.5 * (log_normal(z, mu, logvar) + log_std_normal(z))).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()


def smim_step(model, b, opt):
    out = model(b, "mim")
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()


def run(ds: Dataset, vocab_size, latent, batch, steps, device, variant, warmup=3):
    torch.manual_seed(0)
    model = SentenceAE(ModelConfig(vocab_size=vocab_size, latent_dim=latent)).to(device)
    if variant == "sentencemim":
        opt = make_optimizer("adam", list(model.parameters()), 1e-3)  # as training builds it (fused kernel)
        batches = ds.epoch_batches(batch, seed=0, epoch=0)  # length-bucketed
        step = smim_step
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        perm = np.random.default_rng(0).permutation(len(ds))
        batches = [perm[i:i + batch] for i in range(0, len(perm), batch)]  # random batches
        step = plain_step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens, elapsed = 0, 0.0
    for i, idx in enumerate(batches[:steps + warmup]):
        b = ds.batch(idx).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(model, b, opt)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            elapsed += time.perf_counter() - t0
            tokens += int(b.lengths.sum())
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return tokens / elapsed, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--latents", default="16,128,512")
    ap.add_argument("--batches", default="20,64")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--plain", action="store_true", help="also time the plain-loop reference")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vocab, data = load_corpus_splits(TrainConfig(corpus="ptb", data_dir=args.data_dir), None, ("train",),
                                     log=lambda *a: None)
    ds = data["train"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# commit {commit}, torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, {args.steps} timed steps after 3 warm-up")
    print("| model | batch | loop | real tokens/s | peak memory (MiB, CPU: max RSS of the process) |")
    print("|---|---|---|---|---|")
    rows = []
    for latent in map(int, args.latents.split(",")):
        for batch in map(int, args.batches.split(",")):
            for variant in (["sentencemim", "plain"] if args.plain else ["sentencemim"]):
                tps, peak = run(ds, len(vocab), latent, batch, args.steps, device, variant)
                rows.append(dict(latent=latent, batch=batch, loop=variant, tokens_per_s=tps, peak_mib=peak))
                print(f"| sMIM({latent}) | {batch} | {variant} | {tps:,.0f} | {peak:,.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": commit, "device": str(device), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:  # a missing corpus or a bad --data-dir: one line, no traceback
        sys.exit(f"error: {e}")
