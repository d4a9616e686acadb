"""Training-step time with torch's fused Adam kernel against its per-tensor Adam.

Two copies of the same model (same seed) take the same real PTB batches, alternating
which goes first, so a busy machine slows both alike; the ratio is what to read.

    python benchmarks/adam_kernel.py --data-dir ../shared/data [--latent 512] [--steps 80] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import torch

from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.errors import UserError
from sentencemim.model import SentenceAE
from sentencemim.train import load_corpus_splits, make_optimizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--latent", type=int, default=512, help="latent size (0: the GRU language model)")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vocab, data = load_corpus_splits(TrainConfig(corpus="ptb", data_dir=args.data_dir), None, ("train",),
                                     log=lambda *a: None)
    ds = data["train"]
    objective = "mim" if args.latent else "lm"

    def build(fused):
        torch.manual_seed(0)
        model = SentenceAE(ModelConfig(vocab_size=len(vocab), latent_dim=args.latent, embedding_dropout=0.5))
        model.train()
        params = list(model.parameters())
        opt = (make_optimizer("adam", params, 1e-3) if fused
               else torch.optim.Adam(params, lr=1e-3, foreach=False, fused=False))
        return model, opt

    runs = {"fused": build(True), "per-tensor": build(False)}
    step_s = dict.fromkeys(runs, 0.0)
    opt_s = dict.fromkeys(runs, 0.0)
    warmup = 4
    for i, idx in enumerate(ds.epoch_batches(20, seed=0, epoch=0)[:args.steps + warmup]):
        b = ds.batch(idx)
        for name in (list(runs) if i % 2 else list(runs)[::-1]):
            model, opt = runs[name]
            t0 = time.perf_counter()
            out = model(b, objective)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if i >= warmup:
                step_s[name] += t2 - t0
                opt_s[name] += t2 - t1
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# commit {commit}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.machine()}, {objective} latent {args.latent}, batch 20, {args.steps} timed steps after {warmup}")
    print("| Adam | whole step (ms) | optimizer step (ms) |")
    print("|---|---|---|")
    for name in runs:
        print(f"| {name} | {1000 * step_s[name] / args.steps:.1f} | {1000 * opt_s[name] / args.steps:.1f} |")
    print(f"per-tensor / fused, whole step: {step_s['per-tensor'] / step_s['fused']:.3f}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:  # a missing corpus or a bad --data-dir: one line, no traceback
        sys.exit(f"error: {e}")
