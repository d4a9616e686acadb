"""The evaluation scorer must give the same -log p(x|z) as the training path
(SentenceAE.token_nll, which runs torch.nn.GRU) for every (sample, sentence) pair."""

import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.model import SentenceAE
from sentencemim.scoring import Scorer


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
@pytest.mark.parametrize("onednn", [True, False])
def test_scorer_matches_token_nll(tiny_vocab, tiny_dataset, layers, onednn):
    model = _model(len(tiny_vocab), layers)
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))  # lengths 2..11: padding in every batch
    z = torch.randn(4, b.size, model.cfg.latent_dim)
    sc = Scorer(model, chunk=5)  # small chunks: rows split across chunks
    if not onednn:
        sc.out = None  # the plain F.linear path (GPUs, builds without oneDNN)
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


def test_bf16_is_close_but_labelled_approximate(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab))
    b = tiny_dataset.batch(list(range(len(tiny_dataset))))
    z = torch.randn(8, b.size, model.cfg.latent_dim)
    exact, _ = Scorer(model).nll(b.dec_in, b.dec_tgt, z)
    approx, _ = Scorer(model, "bf16").nll(b.dec_in, b.dec_tgt, z)
    diff = (approx - exact).abs()
    assert diff.max() < 0.5  # nats per sentence on 2-11 tokens
    assert diff.max() > 0  # it really ran in bfloat16


def test_scorer_refuses_training_mode_and_unknown_precision(tiny_vocab, tiny_dataset):
    model = _model(len(tiny_vocab))
    with pytest.raises(ValueError):
        Scorer(model, "fp8")
    model.train()
    b = tiny_dataset.batch([0])
    with pytest.raises(RuntimeError, match="eval"):
        Scorer(model).nll(b.dec_in, b.dec_tgt, torch.zeros(1, 1, model.cfg.latent_dim))
