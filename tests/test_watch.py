"""Training you can watch: latent diagnostics in metrics.jsonl, the collapse warning,
and TensorBoard event files read back with TensorBoard's own reader."""

import json
import math

import numpy as np
import pytest
import torch

from sentencemim.cli import build_parser
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.train import train
from sentencemim.watch import Watch, latent_diagnostics

from conftest import write_corpus


def _records(run, kind):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == kind]


def test_tensorboard_flag_is_a_switch():
    p = build_parser()
    assert p.parse_args(["train", "--out", "x", "--tensorboard"]).tensorboard is True
    assert p.parse_args(["train", "--out", "x"]).tensorboard is None  # TrainConfig default (off) applies


def test_validation_records_carry_latent_diagnostics(tmp_path, tiny_dataset):
    corpus = write_corpus(tmp_path / "c")
    run = tmp_path / "run"
    train(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=3),
          TrainConfig(corpus=str(corpus), batch_size=8, max_steps=10, eval_every=5, log_every=5, seed=1),
          run, quiet=True)
    valid = _records(run, "valid")
    assert {0, 5, 10} <= {r["step"] for r in valid}  # start, eval_every (and epoch ends)
    for r in valid:
        assert r["latent_dim"] == 3 and r["latent_sentences"] == 10  # the whole (10-sentence) valid split
        assert 0 <= r["active_units"] <= 3
        assert r["mutual_information"] <= math.log(10) + 1e-9  # the estimator is exactly at most log n
    assert not (run / "tensorboard").exists()  # only with --tensorboard
    start = _records(run, "event")[0]
    assert start["event"] == "start" and start["commit"] and start["command"]


def test_diagnostics_match_bounds_on_the_same_posteriors(tiny_model, tiny_dataset):
    from sentencemim.eval.bounds import active_units, mutual_information, posteriors
    rec, std, var = latent_diagnostics(tiny_model, tiny_dataset, batch_size=4)
    mu, logvar = posteriors(tiny_model, tiny_dataset)
    assert rec["active_units"] == active_units(mu)[0]
    assert rec["mutual_information"] == pytest.approx(mutual_information(mu, logvar, 0))
    torch.testing.assert_close(std, torch.exp(0.5 * logvar.double()))
    assert std.shape == (6, 3) and var.shape == (3,)


def test_collapse_warning_only_when_no_unit_is_active(tiny_model, tiny_dataset, tmp_path):
    lines = []
    watch = Watch(tmp_path, log=lines.append)
    with torch.no_grad():  # spread the means far apart: every unit active
        tiny_model.to_mu.weight.mul_(100.0)
    rec = watch.validation(tiny_model, tiny_dataset, {}, step=7)
    assert rec["active_units"] == 3 and not any("WARNING" in line for line in lines)
    with torch.no_grad():  # the same posterior for every sentence: collapse
        tiny_model.to_mu.weight.zero_()
        tiny_model.to_logvar.weight.zero_()
    rec = watch.validation(tiny_model, tiny_dataset, {}, step=8)
    assert rec["active_units"] == 0 and abs(rec["mutual_information"]) < 1e-9  # one code for every sentence
    assert any(line.startswith("WARNING: posterior collapse at step 8") for line in lines)
    lines.clear()
    watch.validation(tiny_model, tiny_dataset, {}, step=9)  # still collapsed: warned once, at the fall
    assert not any("WARNING" in line for line in lines)
    fresh = Watch(tmp_path, log=lines.append)
    fresh.validation(tiny_model, tiny_dataset, {}, step=0)  # an untrained start is not a collapse
    assert not any("WARNING" in line for line in lines)


def test_no_active_unit_with_informative_codes_is_told_apart(tiny_model, tiny_dataset, tmp_path):
    """Means spread at a scale below the 0.01 threshold, posteriors far narrower still:
    no active unit, yet the code tells the sentences apart (as sMIM early in training)."""
    lines = []
    with torch.no_grad():
        tiny_model.to_mu.weight.mul_(0.5)  # Var_x(mu_u) < 0.002 in every dimension
        tiny_model.to_logvar.weight.zero_()
        tiny_model.to_logvar.bias.fill_(-20.0)  # clamped at the floor, std e^-5
    rec = Watch(tmp_path, log=lines.append).validation(tiny_model, tiny_dataset, {}, step=3)
    assert rec["active_units"] == 0 and rec["mutual_information"] > 1.0
    assert any(line.startswith("WARNING: no active latent unit at step 3") and "small scale" in line
               for line in lines)


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    corpus = write_corpus(tmp_path / "c")
    run = tmp_path / "run"
    args = build_parser().parse_args(["train", "--out", str(run), "--corpus", str(corpus), "--embedding-dim", "8",
                                      "--hidden-dim", "8", "--latent-dim", "3", "--batch-size", "8",
                                      "--max-steps", "12", "--eval-every", "6", "--log-every", "3",
                                      "--objective", "vae",
                                      "--tensorboard", "--quiet"])
    assert args.func(args) == 0
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    tags = ea.Tags()
    train_recs, valid_recs = _records(run, "train"), _records(run, "valid")
    for key, tag in (("loss", "train/loss"), ("rec_per_sentence", "train/reconstruction_nll"),
                     ("kl_per_sentence", "train/kl"), ("lr", "train/lr"), ("tokens_per_s", "train/tokens_per_s"),
                     ("beta", "train/kl_weight_beta")):
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in train_recs] == [3, 6, 9, 12]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in train_recs], rtol=1e-6)
    latent = ea.Scalars("train/latent_term")  # vae without annealing: beta = 1, so the KL
    np.testing.assert_allclose([e.value for e in latent], [r["kl_per_sentence"] for r in train_recs],
                               rtol=1e-4, atol=1e-5)
    for key, tag in (("loss", "valid/loss"), ("mutual_information", "valid/mutual_information"),
                     ("active_units", "valid/active_units"), ("rec_per_sentence", "valid/reconstruction_nll")):
        events = ea.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in valid_recs]
        assert {0, 6, 12} <= set(e.step for e in events)
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in valid_recs], rtol=1e-6)
    assert "valid/posterior_std" in tags["histograms"]
    hist = ea.Histograms("valid/posterior_std")
    assert [h.step for h in hist] == [r["step"] for r in valid_recs]
    h = hist[-1].histogram_value
    assert h.num == 10 * 3  # every std of 10 validation sentences x 3 dimensions
    assert h.min > 0 and h.max <= math.exp(0.5 * 20)  # a std, clamped far below by the log-variance floor
