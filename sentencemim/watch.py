"""Training you can watch: latent diagnostics at every validation, a collapse
warning in the training log, and (with `smim train --tensorboard`) TensorBoard
event files in RUN/tensorboard/.

train.py holds one `Watch` on the main rank and calls it at two points:

    watch.train(record)                                       # each log_every steps: loss terms, lr, tokens/s
    val.update(watch.validation(model, valid_ds, val, step))  # each validation: MI, active units, stds

The diagnostics come from the posterior means and log-variances of at most
`DIAG_SENTENCES` validation sentences (a fixed random subset, the same at every
validation), through bounds.active_units and bounds.mutual_information. They use
no global RNG, so they never change the course of a run or its exact resume.

TensorBoard (the `tensorboard` extra) is imported the first time something is
written, so a run without --tensorboard never imports it:

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from .eval import bounds
from .errors import UserError

DIAG_SENTENCES = 2000  # validation sentences behind the MI estimate and active units
TB_DIR = "tensorboard"
COLLAPSE_MI = 0.1  # nats: below it, with no active unit, q(z|x) is taken to have collapsed to one code

# metrics.jsonl key of a train record -> TensorBoard tag
TRAIN_TAGS = {"loss": "train/loss", "rec_per_sentence": "train/reconstruction_nll",
              "kl_per_sentence": "train/kl", "beta": "train/kl_weight_beta", "lr": "train/lr",
              "tokens_per_s": "train/tokens_per_s"}
VALID_TAGS = {"loss": "valid/loss", "rec_per_sentence": "valid/reconstruction_nll",
              "kl_per_sentence": "valid/kl", "ppl_rec_words_eos": "valid/ppl_rec_words_eos",
              "mutual_information": "valid/mutual_information", "active_units": "valid/active_units"}


@torch.no_grad()
def latent_diagnostics(model, ds, batch_size: int = 100, max_sentences: int = DIAG_SENTENCES,
                       seed: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(record, posterior stds (n, d), per-dimension Var_x(mu) (d,)) on at most
    `max_sentences` sentences of ds. The record's keys go into metrics.jsonl."""
    sub = ds.subset(max_sentences, seed)
    was_training = model.training
    device = next(model.parameters()).device
    try:
        mu, logvar = bounds.posteriors(model, sub, batch_size, device)  # (n, d) each, CPU
    finally:
        model.train(was_training)
    au, var = bounds.active_units(mu)
    std = torch.exp(0.5 * logvar.double())
    rec = {"active_units": au, "latent_dim": int(mu.shape[1]),
           "mutual_information": bounds.mutual_information(mu, logvar, seed),
           "posterior_std_median": float(std.median()), "latent_sentences": int(mu.shape[0])}
    return rec, std, torch.as_tensor(var)


class Watch:
    """Latent diagnostics + collapse warning always; TensorBoard when asked for."""

    def __init__(self, out: str | Path, tensorboard: bool = False, log: Callable = print,
                 purge_step: int | None = None, batch_size: int = 100, seed: int = 0):
        self.dir = Path(out) / TB_DIR
        self.tensorboard = tensorboard
        self.log = log
        self.purge_step = purge_step  # on resume: drop events a killed run wrote after its checkpoint
        self.batch_size = batch_size
        self.seed = seed
        self._writer = None
        self._last_au = None  # active units at the previous validation after step 0
        if tensorboard:
            self.writer()  # a missing extra is reported before training starts, not at the first log

    def writer(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: "
                                "pip install 'sentencemim[tensorboard]'") from None
            self._writer = SummaryWriter(str(self.dir), purge_step=self.purge_step)
            self.log(f"TensorBoard: tensorboard --logdir {self.dir}")
        return self._writer

    def train(self, record: dict) -> None:
        """A `train` record of metrics.jsonl (window means per sentence)."""
        if not self.tensorboard:
            return
        w, step = self.writer(), record["step"]
        for key, tag in TRAIN_TAGS.items():
            if key in record:
                w.add_scalar(tag, record[key], step)
        # the latent part of the objective, per sentence: mim -1/2 (log q + log P), vae beta KL, ae 0
        w.add_scalar("train/latent_term", record["loss"] - record["rec_per_sentence"], step)

    def validation(self, model, ds, val: dict, step: int) -> dict:
        """Diagnostics of one validation (whose loss terms are `val`): logged, with a
        warning on collapse, written to TensorBoard with `val`, and returned for the
        `valid` record of metrics.jsonl. The language model (no latent) has none: its
        validation terms still go to TensorBoard."""
        if not model.has_latent:
            if self.tensorboard:
                w = self.writer()
                for key, tag in VALID_TAGS.items():
                    if key in val:
                        w.add_scalar(tag, val[key], step)
                w.flush()
            return {}
        rec, std, var = latent_diagnostics(model, ds, self.batch_size, seed=self.seed)
        self.log(f"latent step {step}: active units {rec['active_units']}/{rec['latent_dim']} "
                 f"(Var_x E_q[z_u] > 0.01) | MI estimate {rec['mutual_information']:.3f} nats "
                 f"(<= log n = {math.log(rec['latent_sentences']):.3f}) | median posterior std "
                 f"{rec['posterior_std_median']:.3g} | {rec['latent_sentences']} validation sentences")
        au, mi = rec["active_units"], rec["mutual_information"]
        if au == 0 and step > 0 and self._last_au != 0:  # a fall to 0 (an untrained start does not count)
            if mi < COLLAPSE_MI:
                self.log(f"WARNING: posterior collapse at step {step}: no active latent unit (every dimension has "
                         f"Var_x E_q[z_u] <= 0.01) and MI estimate {mi:.3f} nats: q(z|x) does not depend on x")
            else:
                self.log(f"WARNING: no active latent unit at step {step} (every dimension has Var_x E_q[z_u] <= 0.01), "
                         f"though the MI estimate is {mi:.3f} nats: the codes differ only at a small scale")
        if step > 0:
            self._last_au = au
        if self.tensorboard:
            w = self.writer()
            both = {**val, **rec}
            for key, tag in VALID_TAGS.items():
                if key in both:
                    w.add_scalar(tag, both[key], step)
            w.add_histogram("valid/posterior_std", std.flatten(), step)
            w.add_histogram("valid/posterior_mean_variance_per_dim", var, step)
            w.flush()
        return rec

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._last_au = None  # active units at the previous validation after step 0
