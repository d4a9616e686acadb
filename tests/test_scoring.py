"""The evaluation scorer must give the same -log p(x|z) as the training path
(SentenceAE.token_nll, which runs torch.nn.GRU) for every (sample, sentence) pair."""

import numpy as np
import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.eval.terms import sentence_terms
from sentencemim.model import SentenceAE
from sentencemim.errors import UserError
from sentencemim.eval.scoring import Scorer, _onednn_linear, bf16_problem

HAVE_ONEDNN = _onednn_linear(torch.nn.Linear(4, 3), torch.float32) is not None
HAVE_ONEDNN_BF16 = _onednn_linear(torch.nn.Linear(4, 3), torch.bfloat16) is not None


def _model(vocab_size, layers=1, latent=5):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=vocab_size, embedding_dim=7, hidden_dim=11, latent_dim=latent,
                      num_layers=layers, embedding_dropout=0.5)
    m = SentenceAE(cfg).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a misplaced bias shows
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _reference(model, b, z):
    S, B, d = z.shape
    rec, eos = model.token_nll(b.dec_in.repeat(S, 1), b.dec_tgt.repeat(S, 1), b.lengths.repeat(S), z.reshape(S * B, d))
    return rec.view(S, B), eos.view(S, B)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("path", ["onednn", "plain", "gpu-layout"])
def test_scorer_matches_token_nll(tiny_vocab, tiny_dataset, layers, path):
    model = _model(len(tiny_vocab), layers)
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))  # lengths 2..11: padding in every batch
    z = torch.randn(4, b.size, model.cfg.latent_dim)
    sc = Scorer(model, chunk=5)  # small chunks: rows split across chunks
    if path == "onednn":
        if not HAVE_ONEDNN:
            pytest.skip("this torch build has no oneDNN")
        assert sc.out is not None
    else:
        sc.out = None  # the plain F.linear path (GPUs, builds without oneDNN)
    if path == "gpu-layout":
        sc.per_step = False  # what a GPU runs: all steps' states projected after the loop
    rec, eos = sc.nll(b.dec_in, b.dec_tgt, z)
    ref_rec, ref_eos = _reference(model, b, z)
    assert rec.shape == (4, b.size)
    torch.testing.assert_close(rec, ref_rec, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(eos, ref_eos, atol=1e-4, rtol=1e-5)
    assert (eos > 0).all() and (rec > eos).all()


def test_scorer_batch_order_and_company_do_not_matter(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab))
    sc = Scorer(model)
    b = tiny_dataset.batch([0, 1, 2, 3, 4, 5])
    z = torch.randn(3, 6, model.cfg.latent_dim)
    full, _ = sc.nll(b.dec_in, b.dec_tgt, z)
    one = tiny_dataset.batch([4])
    alone, _ = sc.nll(one.dec_in, one.dec_tgt, z[:, 4:5])
    torch.testing.assert_close(alone[:, 0], full[:, 4], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("onednn", [True, False])
def test_bf16_is_close_to_float32(tiny_vocab, tiny_dataset, onednn):
    if onednn and not HAVE_ONEDNN_BF16:
        pytest.skip(f"no native bf16 on this CPU ({bf16_problem('cpu')}): the oneDNN bf16 path cannot run here")
    model = _model(len(tiny_vocab))
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    z = torch.randn(8, b.size, model.cfg.latent_dim)
    exact, _ = Scorer(model).nll(b.dec_in, b.dec_tgt, z)
    # the plain path (what a GPU runs) is emulated on a CPU without native bf16: allowed here only
    sc = Scorer(model, "bf16", check_support=onednn)
    if not onednn:
        sc.out = None
    approx, _ = sc.nll(b.dec_in, b.dec_tgt, z)
    assert approx.dtype == torch.float32
    diff = (approx - exact).abs()
    assert diff.max() < 0.5  # nats per sentence on 2-11 tokens
    assert not torch.equal(approx, exact)  # it really ran in bfloat16


def test_float64_model_scores_in_float64(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab)).double()
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    z = torch.randn(3, b.size, model.cfg.latent_dim, dtype=torch.float64)
    rec, eos = Scorer(model).nll(b.dec_in, b.dec_tgt, z)
    ref, ref_eos = _reference(model, b, z)
    assert rec.dtype == torch.float64
    torch.testing.assert_close(rec, ref, atol=1e-10, rtol=1e-12)
    torch.testing.assert_close(eos, ref_eos, atol=1e-10, rtol=1e-12)


def test_scorer_refuses_stale_weights(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab))
    sc = Scorer(model)
    b = tiny_dataset.batch([0, 1])
    z = torch.zeros(1, 2, model.cfg.latent_dim)
    sc.nll(b.dec_in, b.dec_tgt, z)
    with torch.no_grad():
        model.out.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="changed"):
        sc.nll(b.dec_in, b.dec_tgt, z)


def test_sentence_terms_at_mean_and_sample_average(tiny_vocab, tiny_dataset):
    """The MELBO's inputs: rec_mean is -log p(x|mu); rec averages n_z draws of z ~ q."""
    model = _model(len(tiny_vocab))
    res = sentence_terms(model, tiny_dataset, n_z=3, batch_size=4, seed=5)
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    with torch.no_grad():
        mu, logvar = model.encode(b.enc_in, b.lengths)
        at_mean, _ = model.token_nll(b.dec_in, b.dec_tgt, b.lengths, mu)
    np.testing.assert_allclose(res["rec_mean"], at_mean.double().numpy(), atol=1e-4)
    assert np.all(res["rec"] != res["rec_mean"])  # sampled, not the mean


def test_scorer_refuses_training_mode_and_unknown_precision(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab))
    with pytest.raises(ValueError):
        Scorer(model, "fp8")
    model.train()
    b = tiny_dataset.batch([0])
    with pytest.raises(RuntimeError, match="eval"):
        Scorer(model).nll(b.dec_in, b.dec_tgt, torch.zeros(1, 1, model.cfg.latent_dim))


def test_bf16_is_refused_in_one_line_where_this_cpu_lacks_it(tiny_vocab):
    """The probe feeds a bf16 input (a float32 probe passed on AVX2-only CPUs, whose bf16
    path then crashed); without native bf16, Scorer refuses bf16 with a UserError."""
    model = _model(len(tiny_vocab))
    if HAVE_ONEDNN_BF16:
        assert bf16_problem("cpu") is None
        Scorer(model, "bf16")
    else:
        assert "bf16" in bf16_problem("cpu")
        with pytest.raises(UserError, match="--precision bf16: .*use --precision fp32"):
            Scorer(model, "bf16")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("per_step", [True, False])
def test_scorer_gradient_matches_autograd_through_token_nll(tiny_vocab, tiny_dataset, layers, per_step):
    """nll_grad (HMC, fitted proposals) = d token_nll / dz by autograd, on padded batches."""
    model = _model(len(tiny_vocab), layers)
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    z = torch.randn(3, b.size, model.cfg.latent_dim)
    sc = Scorer(model, chunk=5)
    sc.per_step = per_step
    rec, g = sc.nll_grad(b.dec_in, b.dec_tgt, z)
    zz = z.reshape(-1, z.shape[-1]).clone().requires_grad_(True)
    ref, _ = model.token_nll(b.dec_in.repeat(3, 1), b.dec_tgt.repeat(3, 1), b.lengths.repeat(3), zz)
    (ref_g,) = torch.autograd.grad(ref.sum(), zz)
    torch.testing.assert_close(rec.reshape(-1), ref.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(g.reshape(-1, z.shape[-1]), ref_g, atol=1e-5, rtol=1e-4)
    assert g.abs().sum() > 0 and not any(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not HAVE_ONEDNN_BF16, reason="this CPU has no native bf16 matrix path")
def test_bf16_gradient_is_close_to_the_exact_one(tiny_vocab, tiny_dataset):
    """A bf16 Scorer's nll_grad (HMC's surrogate force) rounds the projections only: its
    gradient points the same way as the float32 one, to within bfloat16's precision."""
    model = _model(len(tiny_vocab))
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    z = torch.randn(3, b.size, model.cfg.latent_dim)
    rec, g = Scorer(model).nll_grad(b.dec_in, b.dec_tgt, z)
    rec16, g16 = Scorer(model, "bf16").nll_grad(b.dec_in, b.dec_tgt, z)
    assert g16.dtype == g.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(g16.reshape(-1, g.shape[-1]), g.reshape(-1, g.shape[-1]), dim=1)
    assert cos.min() > 0.99
    assert ((g16 - g).norm() / g.norm()) < 0.05 and not torch.equal(g16, g)  # rounded, but close
    torch.testing.assert_close(rec16, rec, atol=0.05 * rec.abs().max().item(), rtol=0.02)
