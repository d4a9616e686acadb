"""Training: one straight loop with validation, lr decay on plateau, checkpoints,
exact resume, and (under torchrun) DDP.

Run directory:
    config.json            model + train config (the same names as the CLI flags)
    vocab.json             the vocabulary (fixed special ids)
    metrics.jsonl          one JSON object a line: kind "train" | "valid" | "event"
    checkpoint-latest.pt   written every `checkpoint_every` steps, each epoch, on stop
    checkpoint-best.pt     the lowest validation loss so far

Exact resume: the batch order of an epoch is a function of (seed, epoch), the
checkpoint holds the position inside the epoch and the torch RNG state, and
validation runs under a forked RNG, so a resumed run sees the same batches and
the same dropout/z noise as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint, corpora, rundir
from .config import ModelConfig, TrainConfig, to_dict
from .data import Dataset, ReadStats, encode_sentences, read_sentences
from .errors import UserError
from .model import SentenceAE, kl_weight
from .progress import Progress
from .provenance import code_commit, command_line
from .runtime import Runtime, check_model_fits, setup, teardown
from .watch import Watch
from .vocab import Vocab

class NumericalError(UserError):
    """A non-finite loss or gradient (stops training under nan_policy=stop)."""


def load_corpus_splits(tc: TrainConfig, vocab: Vocab | None, splits=("train", "valid"),
                       log=print) -> tuple[Vocab, dict]:
    """Read the splits of the configured corpus; build the vocabulary from train if
    none is given. Every read is reported (lines, kept, skipped, dropped)."""
    rc = corpora.resolve(tc.corpus, tc.data_dir, splits=splits)
    texts, stats = {}, {}
    for split in splits:
        sents, st_all = [], ReadStats(path=",".join(map(str, rc.files[split])))
        for path in rc.files[split]:
            # only the training split is subject to the max-length policy
            ml = tc.max_length if split == "train" else 0
            s, st = read_sentences(path, ml, tc.length_policy, rc.label_column.get(path, False))
            log(st.summary())
            sents += s
            for k in ("lines", "empty", "dropped_long", "truncated", "kept", "words"):
                setattr(st_all, k, getattr(st_all, k) + getattr(st, k))
        texts[split], stats[split] = sents, st_all
        very_long = sum(1 for x in sents if len(x) > 1000)
        if very_long:
            log(f"{split}: {very_long} sentence(s) longer than 1000 words are kept whole; "
                f"--max-length N --length-policy drop|truncate limits them")
    if vocab is None:
        if "train" not in texts:
            raise UserError("a vocabulary is needed (build it from the train split)")
        vocab = Vocab.build(texts["train"], tc.min_count, tc.max_vocab)
        log(f"vocabulary: {len(vocab)} entries (4 specials) from {tc.corpus} train, "
            f"min_count {tc.min_count}, max {tc.max_vocab or 'no cap'}")
    datasets = {}
    for split, sents in texts.items():
        ds = Dataset(encode_sentences(sents, vocab), stats[split], sum(vocab.count_oov(s) for s in sents))
        if ds.oov:
            log(f"{split}: {ds.oov} out-of-vocabulary tokens mapped to <unk>")
        datasets[split] = ds
    return vocab, datasets


@dataclass
class State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    lr: float = 0.0
    best_val: float = math.inf  # lowest validation loss seen (selects checkpoint-best)
    best_epoch_val: float = math.inf  # lowest end-of-epoch validation loss (drives the lr schedule)
    bad_epochs: int = 0
    skipped_steps: int = 0
    done: bool = False


@torch.no_grad()
def validate(model, ds: Dataset, tc: TrainConfig, rt: Runtime) -> dict:
    """Objective (for vae: the full negative ELBO, beta = 1, whatever the annealing)
    and reconstruction NLL on a validation set (sums over sentences and tokens,
    all-reduced). Runs under a forked RNG seeded by `tc.seed` so it neither
    depends on nor disturbs the training noise."""
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, rec, kl, sentences, tokens
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        torch.manual_seed(tc.seed + 1)
        batches = ds.eval_batches(tc.batch_size)[rt.rank::rt.world_size]
        for idx in batches:
            b = ds.batch(idx).to(rt.device)
            out = model(b, tc.objective, 1.0)
            n = b.size
            sums[0] += out.loss.item() * n
            sums[1] += out.rec.sum().item()
            sums[2] += out.kl.sum().item()
            sums[3] += n
            sums[4] += out.tokens.sum().item()
    loss, rec, kl, n, tok = rt.all_reduce_sum(sums)
    model.train(was_training)
    return {"loss": loss / n, "rec_per_sentence": rec / n, "kl_per_sentence": kl / n,
            "ppl_rec_words_eos": math.exp(rec / tok), "sentences": int(n), "tokens": int(tok)}


def _fused_devices() -> tuple:
    """Devices with torch's fused Adam kernel (CPU only since torch 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return tuple(_get_fused_kernels_supported_devices())
    except ImportError:
        return ("cuda",)


def _fused_ok(params) -> bool:
    """Whether torch's fused Adam kernel takes these parameters (a supported device, float)."""
    devices = _fused_devices()
    return all(p.device.type in devices and p.is_floating_point() for p in params)


def load_optimizer_state(opt, state: dict) -> None:
    """Load a checkpoint's optimizer state into `opt`, keeping `opt`'s implementation. A state
    dict's param groups name the implementation it was saved with (per-tensor before the fused
    kernel), and torch places the loaded `step` counters by those flags (on the parameters'
    device only for fused), so the flags are set in the state before it is loaded."""
    groups = state["param_groups"]
    if len(groups) == len(opt.param_groups):  # (otherwise torch refuses the state as it is)
        groups = [{**saved, "fused": g.get("fused"), "foreach": g.get("foreach")}
                  for saved, g in zip(groups, opt.param_groups)]
    opt.load_state_dict({**state, "param_groups": groups})


def make_optimizer(name: str, params, lr: float):
    """The training optimizer: Adam (the paper's) or plain SGD. Adam runs through torch's fused
    kernel where it can: one vectorised pass over each parameter instead of a dozen elementwise
    ops. The algorithm and its state are the same, so checkpoints move freely between the two
    (load_optimizer_state); on the PTB sMIM (512) step it makes the whole step 1.14x faster on
    one CPU thread (docs/benchmarks.md)."""
    if name == "adam":
        if _fused_ok(params):
            return torch.optim.Adam(params, lr=lr, fused=True, foreach=False)
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def train(mc: ModelConfig, tc: TrainConfig, out: str | Path, resume: bool = False,
          overrides: dict | None = None, quiet: bool = False, model_overrides: dict | None = None,
          accept_changed_data: bool = False, held_lock: "rundir.RunLock | None" = None) -> dict:
    """Train a model into run directory `out`. With `resume`, continue from
    `out/checkpoint-latest.pt` with the saved settings: `overrides` (TrainConfig keys) and
    `model_overrides` (ModelConfig keys) are applied where a resume may change them
    (max_steps, max_epochs, eval_every, log_every, checkpoint_every, device, data_dir) and
    refused where they differ otherwise (rundir.resume_configs). The run directory is
    locked against a second writer; a resume checks the data against the recorded
    fingerprints (`accept_changed_data` continues anyway); a caller that already holds the
    lock (the reproduce driver, which writes its records under it) passes it as `held_lock`.
    Returns the final state."""
    out = Path(out)
    ckpt_path = out / "checkpoint-latest.pt"
    saved = None
    if resume:
        if not ckpt_path.is_file():
            early = any((out / n).exists() for n in rundir.RUN_FILES)
            raise UserError(f"--resume: no checkpoint at {ckpt_path}" + (
                " (the run stopped before its first checkpoint; start it again without --resume)" if early else ""))
        rundir.check_run_config(out)
        saved = checkpoint.load(ckpt_path)
        mc, tc = rundir.resume_configs(saved["model_config"], saved["train_config"], model_overrides or {},
                                       overrides or {}, str(ckpt_path))
    elif ckpt_path.exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    tc.validate()
    mc.validate(check_vocab=False)  # before any data is read
    if saved and tc.max_steps and saved["state"]["step"] >= tc.max_steps:
        # already at its step limit: nothing is read, written or validated again
        if not quiet:
            print(f"{out} is at step {saved['state']['step']}, at or past max_steps {tc.max_steps}: nothing to "
                  f"train (give a larger --max-steps to go on)", file=sys.stderr)
        return {"status": "finished", **saved["state"]}
    if (tc.objective == "lm") != (mc.latent_dim == 0):
        raise UserError(f"objective {tc.objective} with latent_dim {mc.latent_dim}: the language model (objective lm) "
                        "has no latent (latent_dim 0), and mim, vae and ae need latent_dim >= 1")
    rt = setup(tc.device, tc.seed)  # a missing GPU is a one-line error here, before any data is read
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if rt.is_main and not quiet else (lambda *a: None)
    lock = rundir.RunLock(out).acquire() if rt.is_main and held_lock is None else None
    try:
        if rt.is_main:
            rundir.remove_temp_files(out)
            if not saved:
                rundir.clear_unfinished(out, log)
        return _train(mc, tc, out, saved, rt, log, quiet, accept_changed_data)
    finally:
        if lock:
            lock.release()
        teardown()


def _fingerprints(tc: TrainConfig, out: Path) -> dict:
    files = corpora.resolve(tc.corpus, tc.data_dir, splits=("train", "valid")).files
    return rundir.fingerprints(files, out / "vocab.json")


def _train(mc, tc, out, saved, rt, log, quiet, accept_changed_data=False):
    vocab = Vocab.load(out / "vocab.json") if saved else None
    if saved and rt.is_main:  # the data are the run's own, before they are read
        rundir.check_fingerprints(out, _fingerprints(tc, out), accept_changed_data, log)
    vocab, data = load_corpus_splits(tc, vocab, log=log)
    train_ds, valid_ds = data["train"], data["valid"].subset(tc.eval_max_sentences, tc.seed)
    mc.vocab_size = len(vocab)
    mc.validate()
    check_model_fits(mc, tc.optimizer, rt.device)  # before anything is written
    if rt.is_main:
        rundir.write_atomic(out / "config.json", json.dumps({"model": to_dict(mc), "train": to_dict(tc)}, indent=2))
        if not saved:
            rundir.write_atomic(out / "vocab.json", json.dumps(vocab.to_json(), ensure_ascii=False))
            rundir.record_fingerprints(out, _fingerprints(tc, out))
    model = SentenceAE(mc).to(rt.device)
    params = list(model.parameters())
    opt = make_optimizer(tc.optimizer, params, tc.lr)
    st = State(lr=tc.lr)
    window = [0.0] * 6  # loss, rec, kl, sentences, tokens, seconds (since last log line)
    if saved:
        model.load_state_dict(saved["model"])
        load_optimizer_state(opt, saved["optimizer"])
        st = State(**saved["state"])
        window = list(saved["window"])
        torch.set_rng_state(saved["rng"]["torch"])
        if rt.device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], rt.device)
        log(f"resumed {out} at step {st.step} (epoch {st.epoch}, batch {st.batch_in_epoch})")
    ddp = DDP(model, device_ids=[rt.device] if rt.device.type == "cuda" else None) if rt.distributed else model
    n_params = sum(p.numel() for p in params)
    log(f"model: {n_params / 1e6:.2f}M parameters, objective {tc.objective}, latent {mc.latent_dim}, "
        f"device {rt.device}, world size {rt.world_size}")
    if saved and rt.is_main:
        rundir.truncate_metrics(out / "metrics.jsonl", st.step, log)
    # latent diagnostics and collapse warning at each validation; TensorBoard with --tensorboard
    watch = Watch(out, tc.tensorboard, log, st.step if saved else None, seed=tc.seed) if rt.is_main else None
    metrics = rundir.Appender(out / "metrics.jsonl") if rt.is_main else None

    def emit(record):
        if metrics:
            metrics.write(record)

    def save_ckpt(name):
        if not rt.is_main:
            return
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None}
        checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "model_config": to_dict(mc), "train_config": to_dict(tc),
                         "state": vars(st).copy(), "window": list(window), "rng": rng}, out / name)

    stop_signal = []

    def on_signal(signum, frame):
        stop_signal.append(signum)

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    emit({"kind": "event", "event": "resume" if saved else "start", "step": st.step,
          "train_sentences": len(train_ds), "valid_sentences": len(valid_ds),
          "train_read": vars(train_ds.stats), "valid_read": vars(valid_ds.stats), "params": n_params,
          "command": command_line(), "commit": code_commit()})

    def end_of_validation(val, epoch_end):
        if watch:
            val.update(watch.validation(model, valid_ds, val, st.step))
        improved = val["loss"] < st.best_val
        if improved:
            st.best_val = val["loss"]
        if epoch_end:
            # the schedule looks at epoch ends only, so extra validations (eval_every,
            # the one at a --max-steps stop) never change the course of a run
            st.bad_epochs = 0 if val["loss"] < st.best_epoch_val else st.bad_epochs + 1
            st.best_epoch_val = min(st.best_epoch_val, val["loss"])
            if st.bad_epochs >= tc.patience:
                st.lr *= tc.lr_decay
                st.bad_epochs = 0
                for g in opt.param_groups:
                    g["lr"] = st.lr
                emit({"kind": "event", "event": "lr_decay", "step": st.step, "lr": st.lr})
                log(f"lr decayed to {st.lr:.3g}")
        emit({"kind": "valid", "step": st.step, "epoch": st.epoch, "lr": st.lr, **val})
        log(f"valid step {st.step}: loss {val['loss']:.3f} | rec NLL/sentence {val['rec_per_sentence']:.3f} | "
            f"KL {val['kl_per_sentence']:.3f} | rec PPL (words+<eos>, z~q) {val['ppl_rec_words_eos']:.2f}")
        if improved:
            save_ckpt("checkpoint-best.pt")

    try:
        if not saved:  # the starting point, for comparison
            end_of_validation(validate(model, valid_ds, tc, rt),
                              epoch_end=False)
        model.train()
        total_batches = len(train_ds.epoch_batches(tc.batch_size, tc.seed, 0)) // rt.world_size
        limit = tc.max_steps or total_batches * tc.max_epochs
        bar = Progress(limit, "train", enabled=rt.is_main and not quiet, initial=st.step)
        t_last = time.monotonic()
        while not st.done and st.epoch < tc.max_epochs:
            batches = train_ds.epoch_batches(tc.batch_size, tc.seed, st.epoch)
            per_rank = len(batches) // rt.world_size
            batches = batches[rt.rank::rt.world_size][:per_rank]  # equal step counts on every rank
            while st.batch_in_epoch < len(batches):
                b = train_ds.batch(batches[st.batch_in_epoch]).to(rt.device)
                beta = kl_weight(st.step, tc.kl_annealing, tc.kl_anneal_steps, tc.kl_logistic_k) \
                    if tc.objective == "vae" else 1.0
                o = ddp(b, tc.objective, beta)
                opt.zero_grad(set_to_none=True)
                o.loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(params, tc.clip if tc.clip > 0 else float("inf"))
                if not (torch.isfinite(o.loss) and torch.isfinite(gnorm)):
                    what = "loss" if not torch.isfinite(o.loss) else "gradient norm"
                    if tc.nan_policy == "stop":
                        raise NumericalError(
                            f"non-finite {what} at step {st.step + 1} (epoch {st.epoch}); training stopped, "
                            f"the last good checkpoint is kept in {out}")
                    st.skipped_steps += 1
                    opt.zero_grad(set_to_none=True)
                    emit({"kind": "event", "event": "skipped_step", "step": st.step + 1, "what": what})
                else:
                    opt.step()
                st.step += 1
                st.batch_in_epoch += 1
                n = b.size
                window[0] += o.loss.item() * n
                window[1] += o.rec.sum().item()
                window[2] += o.kl.sum().item()
                window[3] += n
                window[4] += b.lengths.sum().item()
                now = time.monotonic()
                window[5] += now - t_last
                t_last = now
                bar.update(1, loss=o.loss.item())
                if st.step % tc.log_every == 0:
                    loss, rec, kl, ns, tok, secs = rt.all_reduce_sum(window[:5]) + [window[5]]
                    rec_s = {"kind": "train", "step": st.step, "epoch": st.epoch, "loss": loss / ns,
                             "rec_per_sentence": rec / ns, "kl_per_sentence": kl / ns, "beta": beta,
                             "lr": st.lr, "tokens_per_s": tok / max(secs, 1e-9)}
                    emit(rec_s)
                    if watch:
                        watch.train(rec_s)
                    bar.update(0, loss=rec_s["loss"], tok_s=round(rec_s["tokens_per_s"]))
                    window = [0.0] * 6
                if tc.eval_every and st.step % tc.eval_every == 0:
                    end_of_validation(validate(model, valid_ds, tc, rt), epoch_end=False)
                if st.step % tc.checkpoint_every == 0:
                    save_ckpt("checkpoint-latest.pt")
                if stop_signal:
                    save_ckpt("checkpoint-latest.pt")
                    name = signal.Signals(stop_signal[0]).name
                    emit({"kind": "event", "event": "interrupted", "signal": name, "step": st.step})
                    log(f"\n{name}: checkpoint saved at step {st.step}; continue with --resume")
                    return {"status": "interrupted", "signal": stop_signal[0], **vars(st)}
                if tc.max_steps and st.step >= tc.max_steps:
                    break
            else:  # the epoch ran to its end
                st.epoch += 1
                st.batch_in_epoch = 0
                end_of_validation(validate(model, valid_ds, tc, rt), epoch_end=True)
                if st.lr < tc.min_lr:
                    st.done = True
                    emit({"kind": "event", "event": "stop", "reason": "lr below min_lr", "step": st.step})
                save_ckpt("checkpoint-latest.pt")
                t_last = time.monotonic()
                continue
            break  # max_steps reached inside the epoch
        validated_here = tc.eval_every and st.step % tc.eval_every == 0
        if st.batch_in_epoch and not validated_here:  # stopped inside an epoch (max_steps): validate there
            end_of_validation(validate(model, valid_ds, tc, rt), epoch_end=False)
        save_ckpt("checkpoint-latest.pt")
        bar.close()
        emit({"kind": "event", "event": "end", "step": st.step})
        return {"status": "finished", **vars(st)}
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if metrics:
            metrics.close()
        if watch:
            watch.close()
