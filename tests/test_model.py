import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sentencemim.config import ModelConfig
from sentencemim.data import collate
from sentencemim.model import SentenceAE, kl_weight


def _batch(ds, idx=(0, 1, 2)):
    return ds.batch(np.array(idx))


def test_shapes_and_gradients(tiny_model, tiny_dataset):
    b = _batch(tiny_dataset)
    for obj in ("mim", "vae", "ae"):
        tiny_model.zero_grad()
        out = tiny_model(b, obj)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        for t in (out.rec, out.rec_eos, out.kl, out.log_q, out.log_p):
            assert t.shape == (3,)
        assert out.z.shape == out.mu.shape == out.logvar.shape == (3, 3)
        out.loss.backward()
        grads = {n: p.grad for n, p in tiny_model.named_parameters()}
        assert grads["embedding.weight"].abs().sum() > 0
        assert grads["encoder.weight_ih_l0"].abs().sum() > 0  # the encoder is trained through z
        assert grads["out.weight"].abs().sum() > 0
        # the AE uses the posterior mean only: no gradient reaches the log-variance head
        lv = grads["to_logvar.weight"]
        assert (lv is None or lv.abs().sum() == 0) == (obj == "ae")


def _manual_rec(model, b, z):
    """-log p(x|z) by stepping the decoder one token at a time over the full softmax."""
    model.eval()
    rec = []
    for i in range(b.size):
        n = int(b.lengths[i])
        h = model.init_hidden(z[i:i + 1])
        total = 0.0
        for t in range(n):
            logits, h = model.logits(b.dec_in[i:i + 1, t:t + 1], z[i:i + 1], h)
            total -= torch.log_softmax(logits[0, -1].double(), -1)[b.dec_tgt[i, t]].item()
        rec.append(total)
    return np.array(rec)


@pytest.mark.parametrize("objective", ["mim", "vae", "ae"])
def test_objective_against_hand_computation(tiny_model, tiny_dataset, objective, monkeypatch):
    b = _batch(tiny_dataset, (0, 3, 5))
    tiny_model.eval()  # no dropout; z still sampled for mim/vae
    with torch.no_grad():
        mu, logvar = tiny_model.encode(b.enc_in, b.lengths)
    eps = torch.tensor([[0.3, -1.2, 0.5], [1.0, 0.0, -0.4], [-0.7, 0.9, 2.0]])
    z_fixed = mu + eps * torch.exp(0.5 * logvar)
    monkeypatch.setattr(SentenceAE, "reparameterize", staticmethod(lambda m, lv: z_fixed))
    beta = 0.37
    with torch.no_grad():
        out = tiny_model(b, objective, beta=beta)
    z = (mu if objective == "ae" else z_fixed).numpy().astype(np.float64)
    rec = _manual_rec(tiny_model, b, torch.from_numpy(z).float())
    m, s = mu.numpy().astype(np.float64), np.exp(0.5 * logvar.numpy().astype(np.float64))
    log_q = norm.logpdf(z, m, s).sum(1)
    log_p = norm.logpdf(z).sum(1)
    kl = (np.log(1 / s) + (s ** 2 + m ** 2) / 2 - 0.5).sum(1)
    expected = {"mim": rec - 0.5 * (log_q + log_p), "vae": rec + beta * kl, "ae": rec}[objective]
    np.testing.assert_allclose(out.rec.numpy(), rec, rtol=1e-5)
    np.testing.assert_allclose(out.loss.item(), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(out.kl.numpy(), kl, rtol=1e-5)
    if objective != "ae":
        np.testing.assert_allclose(out.log_q.numpy(), log_q, rtol=1e-5)
        np.testing.assert_allclose(out.log_p.numpy(), log_p, rtol=1e-5)
    # the <eos> term is the last target position of each sentence
    assert (out.rec_eos > 0).all() and (out.rec_eos < out.rec).all()


def test_per_sentence_values_do_not_depend_on_batch_company(tiny_model, tiny_dataset):
    tiny_model.eval()
    with torch.no_grad():
        alone = tiny_model(tiny_dataset.batch(np.array([4])), "ae").rec
        together = tiny_model(tiny_dataset.batch(np.array([1, 4, 5])), "ae").rec
    assert torch.allclose(alone[0], together[1], atol=1e-5)


def test_logvar_floor_and_encoder_never_sees_eos(tiny_vocab):
    cfg = ModelConfig(vocab_size=len(tiny_vocab), embedding_dim=8, hidden_dim=8, latent_dim=2, logvar_floor=-2.0)
    m = SentenceAE(cfg)
    with torch.no_grad():
        m.to_logvar.bias.fill_(-50.0)
    b = collate([np.array([4, 5, 6])], [0])
    assert (b.enc_in != cfg.eos_id).all()
    _, logvar = m.encode(b.enc_in, b.lengths)
    assert torch.all(logvar >= -2.0)


def test_word_dropout_and_encoder_unk_only_in_training(tiny_vocab):
    cfg = ModelConfig(vocab_size=len(tiny_vocab), embedding_dim=8, hidden_dim=8, latent_dim=2,
                      encoder_unk_rate=0.5, embedding_dropout=0.0)
    m = SentenceAE(cfg)
    tokens = torch.full((4, 50), 7)
    m.train()
    replaced = m._replace_with_unk(tokens, 0.5)
    share = (replaced == cfg.unk_id).float().mean().item()
    assert 0.35 < share < 0.65
    m.eval()
    assert torch.equal(m._replace_with_unk(tokens, 0.5), tokens)


def test_num_layers():
    cfg = ModelConfig(vocab_size=12, embedding_dim=6, hidden_dim=5, latent_dim=2, num_layers=2)
    m = SentenceAE(cfg)
    b = collate([np.array([4, 5]), np.array([6, 7, 8])], [0, 1])
    out = m(b, "mim")
    out.loss.backward()
    assert m.init_hidden(out.z).shape == (2, 2, 5)


def test_kl_weight_schedules():
    assert kl_weight(5, "none", 10) == 1.0
    assert kl_weight(5, "linear", 10) == 0.5 and kl_weight(50, "linear", 10) == 1.0
    assert kl_weight(10000, "logistic", 10000) == pytest.approx(0.5)
    assert kl_weight(0, "logistic", 10000) == pytest.approx(1 / (1 + math.exp(25)))
