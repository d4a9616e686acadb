"""Unit checks of the bounds and latent diagnostics, and of the evaluation report's
labels. Ground truth against exact likelihoods is in test_exact_likelihood.py."""

import json
import math

import numpy as np
import pytest
import torch

from sentencemim.eval import bounds
from sentencemim.config import ModelConfig
from sentencemim.data import Dataset
from sentencemim.eval.evaluate import BOUND_ORDER, evaluate, format_report
from sentencemim.eval.heldout import HeldoutConfig
from sentencemim.eval.terms import melbo, melbo_size_to_match, melbo_vs_size, perplexities
from sentencemim.model import SentenceAE, kl_std_normal, log_normal


def test_log_q_matrix_matches_direct_density():
    g = torch.Generator().manual_seed(0)
    z, mu = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    logvar = torch.randn(4, 5, generator=g) - 8.0  # narrow posteriors: the cancellation case
    direct = torch.stack([log_normal(z.double(), mu[m].double(), logvar[m].double()) for m in range(4)], 1)
    torch.testing.assert_close(bounds.log_q_matrix(z, mu, logvar, chunk=3), direct, rtol=1e-10, atol=1e-6)


def test_aggregate_prior_is_a_mixture_density():
    mu, logvar = torch.tensor([[-2.0], [1.0], [1.5]]), torch.tensor([[0.0], [-1.0], [-3.0]])
    prior = bounds.AggregatePrior(mu, logvar)
    z = torch.linspace(-12, 12, 20001, dtype=torch.float64).reshape(-1, 1)
    p = torch.exp(prior.log_prob(z))
    assert float(p.sum() * (z[1, 0] - z[0, 0])) == pytest.approx(1.0, abs=1e-6)
    # at a point it is the average of the component densities
    z0 = torch.tensor([[0.3]])
    comps = [math.exp(log_normal(z0[0].double(), mu[m].double(), logvar[m].double())) for m in range(3)]
    assert math.exp(prior.log_prob(z0)) == pytest.approx(sum(comps) / 3, rel=1e-12)


@pytest.fixture
def sharp_model(tiny_vocab):
    """A tiny model whose posteriors are (nearly) points: every z ~ q gives ~ the rec at mu."""
    torch.manual_seed(0)
    m = SentenceAE(ModelConfig(vocab_size=len(tiny_vocab), embedding_dim=8, hidden_dim=8, latent_dim=3,
                               logvar_floor=-16.0))
    with torch.no_grad():
        m.to_logvar.weight.zero_()
        m.to_logvar.bias.fill_(-16.0)
    return m.eval()


def test_importance_weights_dataset_order(sharp_model, tiny_dataset):
    """Values land on the right sentence whatever the length-sorted batch order."""
    ds = Dataset(tiny_dataset.seqs[::-1])
    w = bounds.importance_weights(sharp_model, ds, k=5, batch_size=2, max_rows=4, seed=0)
    assert w["rec"].shape == (len(ds), 5)
    for i, s in enumerate(ds.seqs):  # one sentence at a time, z = mu
        b = Dataset([s]).batch([0])
        mu, logvar = sharp_model.encode(b.enc_in, b.lengths)
        rec, _ = sharp_model.token_nll(b.dec_in, b.dec_tgt, b.lengths, mu)
        np.testing.assert_allclose(w["rec"][i], rec.item(), atol=1e-3)
        assert w["kl"][i] == pytest.approx(kl_std_normal(mu, logvar).item(), rel=1e-5)
        assert w["tokens"][i] == len(s) + 1


def test_iwae_is_below_the_sample_average_and_seeded(tiny_model, tiny_dataset):
    tiny_model.eval()
    w = bounds.importance_weights(tiny_model, tiny_dataset, k=50, batch_size=4, max_rows=64, seed=3)
    again = bounds.importance_weights(tiny_model, tiny_dataset, k=50, batch_size=4, max_rows=64, seed=3)
    np.testing.assert_array_equal(w["rec"], again["rec"])
    nll = bounds.iwae_nll(w["rec"], w["log_q"], w["log_p"])
    mc_elbo = (w["rec"] - w["log_p"] + w["log_q"]).mean(1)
    # Jensen on the very same samples: log-mean-exp >= mean
    assert np.all(nll <= mc_elbo + 1e-9)
    # the sample-average ELBO (MC KL) agrees with the analytic-KL ELBO up to Monte Carlo error
    kl_mc = (w["log_q"] - w["log_p"]).mean(1)
    assert np.all(np.abs(kl_mc - w["kl"]) < 5 * (w["log_q"] - w["log_p"]).std(1) / math.sqrt(50) + 1e-6)
    assert np.array_equal(bounds.single_sample_elbo_nll(w["rec"], w["log_q"], w["log_p"]),
                          w["rec"][:, 0] - w["log_p"][:, 0] + w["log_q"][:, 0])


def test_mutual_information_gaussian_channel():
    """x -> mu ~ N(0, s^2), z ~ N(mu, sigma^2): I = d/2 log(1 + s^2/sigma^2) for large N."""
    g = torch.Generator().manual_seed(0)
    N, d, s, sigma = 3000, 2, 1.5, 0.5
    mu = s * torch.randn(N, d, generator=g)
    logvar = torch.full((N, d), 2 * math.log(sigma))
    exact = 0.5 * d * math.log(1 + s ** 2 / sigma ** 2)
    assert bounds.mutual_information(mu, logvar, seed=1) == pytest.approx(exact, abs=0.08)
    # point-like posteriors: the estimate saturates at log N, and never exceeds it
    assert bounds.mutual_information(mu, torch.full((N, d), -30.0)) == pytest.approx(math.log(N), abs=1e-9)
    wide = torch.randn(50, 64, generator=g) * 0.1
    assert bounds.mutual_information(wide, torch.full((50, 64), -12.0)) <= math.log(50) + 1e-12


def test_active_units():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(500, 4, generator=g) * torch.tensor([1.0, 0.3, 0.05, 0.0])  # variances 1, .09, .0025, 0
    n, var = bounds.active_units(mu)
    assert n == 2 and var[0] > 0.8 and var[3] == 0.0


def test_melbo_and_perplexity_conventions():
    rec, eos, tok = np.array([10.0, 20.0]), np.array([1.0, 2.0]), np.array([4, 6])
    m = melbo(rec, eos, tok)
    assert m["nll_per_sentence"] == pytest.approx(15.0 + math.log(2))
    assert m["ppl_words_eos"] == pytest.approx(math.exp((30.0 + 2 * math.log(2)) / 10))
    assert m["ppl_paper"] == pytest.approx(math.exp((30.0 + 2 * math.log(2) - 3.0) / 10))
    assert perplexities(5.0, None, 2)["ppl_paper"] is None
    # a hopeless bound (e.g. a training-set prior far from the test codes) gives inf, not an error
    assert perplexities(1e6, 0.0, 10) == {"ppl_words_eos": math.inf, "ppl_paper": math.inf}


def test_melbo_vs_size_and_extrapolation():
    rec = np.random.default_rng(0).normal(50.0, 5.0, 400)
    curve = melbo_vs_size(rec, [1, 10, 400], trials=200, seed=0)
    assert curve["mean"][2] == pytest.approx(rec.mean() + math.log(400))
    assert curve["std"][2] == pytest.approx(0.0, abs=1e-9) and curve["std"][0] > curve["std"][1]
    # mean rec + log K reaches 60 nats at K = exp(60 - 50) = 10^(10 / ln 10)
    assert melbo_size_to_match(50.0, 60.0) == pytest.approx(10 / math.log(10))


def test_evaluate_report_is_labelled(tiny_model, tiny_vocab, tiny_dataset):
    prior = bounds.training_prior(tiny_model, tiny_dataset, m=4, seed=0)
    rep = evaluate(tiny_model, tiny_dataset, tiny_vocab, repeats=2, iwae_k=8, train_prior=prior,
                   true_nll=np.full(len(tiny_dataset), 1.0), batch_size=4,
                   heldout=HeldoutConfig(heldout_methods="q,gauss,components"), valid_ds=tiny_dataset,
                   valid_what="the same 6 sentences (label test only)")
    per = rep.pop("per_sentence")
    for key in ("melbo", "elbo", "iwae", "elbo_single", "iwae_train_prior", "elbo_single_train_prior", "heldout",
                "heldout_train_prior"):
        assert key in rep
        b = rep[key]
        assert b["bound"] and b["prior"] and b["samples"] and "words+<eos>" in b["what"]
        assert len(per[key if key != "melbo" else "melbo"]) == len(tiny_dataset)
    assert "NOT held-out" in rep["melbo"]["prior"] and "M=4" in rep["iwae_train_prior"]["prior"]
    # aggregated once: the report is the sum over sentences divided once
    assert rep["iwae"]["nll_per_sentence"] == pytest.approx(per["iwae"].sum() / len(tiny_dataset))
    T = int(per["tokens"].sum())
    assert rep["iwae"]["ppl_words_eos"] == pytest.approx(math.exp(per["iwae"].sum() / T))
    text = format_report(rep)
    for key in BOUND_ORDER:
        assert rep[key]["bound"] in text
    assert "[paper convention]" in text and "true NLL gap" in text and "BLEU" in text
    json.dumps(rep, default=float)  # saveable


def test_cross_terms_pairs(tiny_model, tiny_dataset):
    """Fig. 3: entry (i, j) is sentence i decoded with sentence j's code, whatever the chunking."""
    tiny_model.eval()
    cross = bounds.cross_terms(tiny_model, tiny_dataset, max_rows=8, seed=5)
    again = bounds.cross_terms(tiny_model, tiny_dataset, max_rows=1000, seed=5)
    np.testing.assert_allclose(cross["log_px"], again["log_px"], rtol=1e-5)
    mu, logvar = bounds.posteriors(tiny_model, tiny_dataset)
    z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(5)) * torch.exp(0.5 * logvar)
    for i, j in ((0, 0), (1, 4), (5, 2)):
        b = tiny_dataset.batch([i])
        rec, _ = tiny_model.token_nll(b.dec_in, b.dec_tgt, b.lengths, z[j:j + 1])
        assert cross["log_px"][i, j] == pytest.approx(-rec.item(), rel=1e-5)
        assert cross["log_qz"][i, j] == pytest.approx(log_normal(z[i].double(), mu[j].double(),
                                                                 logvar[j].double()).item(), rel=1e-6)
