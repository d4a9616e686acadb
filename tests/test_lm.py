"""The GRU language model baseline (objective lm, latent_dim 0): the decoder alone,
no z input and a zero initial state. Its NLL is exact, so it is checked against a
hand computation with softmax over the full vocabulary, step by step."""

import numpy as np
import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.data import collate
from sentencemim.eval.evaluate import evaluate
from sentencemim.model import SentenceAE


@pytest.fixture
def lm(tiny_vocab):
    torch.manual_seed(3)
    m = SentenceAE(ModelConfig(vocab_size=len(tiny_vocab), embedding_dim=8, hidden_dim=8, latent_dim=0))
    return m.eval()


def _hand_nll(m, seq):
    """-log p(x) = sum_t -log softmax(out(h_t))[w_t], GRU stepped one token at a time from h = 0."""
    cfg = m.cfg
    inp, tgt = [cfg.sos_id] + list(seq), list(seq) + [cfg.eos_id]
    h = torch.zeros(1, 1, cfg.hidden_dim)
    total = 0.0
    with torch.no_grad():
        for w, y in zip(inp, tgt):
            out, h = m.decoder(m.embedding(torch.tensor([[w]])), h)
            total -= torch.log_softmax(m.out(out[0, 0]).double(), -1)[y].item()
    return total


def test_lm_has_no_latent_parts_and_trains(lm):
    names = {n.split(".")[0] for n, _ in lm.named_parameters()}
    assert names == {"embedding", "decoder", "out"}
    assert lm.decoder.input_size == lm.cfg.embedding_dim  # no z concatenated to the inputs
    b = collate([np.array([4, 5, 6]), np.array([7, 8])], [0, 1])
    lm.train()
    out = lm(b, "lm")
    out.loss.backward()
    assert all(p.grad is not None for p in lm.parameters())
    assert torch.all(out.kl == 0) and out.z.shape == (2, 0)
    with pytest.raises(ValueError):
        lm(b, "mim")
    with pytest.raises(ValueError):
        lm.encode(b.enc_in, b.lengths)


def test_lm_forward_and_evaluation_equal_hand_computation(lm, tiny_dataset, tiny_vocab):
    seqs = tiny_dataset.seqs
    hand = np.array([_hand_nll(lm, s.tolist()) for s in seqs])
    b = tiny_dataset.batch(np.arange(len(seqs)))
    with torch.no_grad():
        rec = lm(b, "lm").rec.double().numpy()
    np.testing.assert_allclose(rec[np.argsort(b.index.numpy())], hand, rtol=1e-5)
    rep = evaluate(lm, tiny_dataset, tiny_vocab, batch_size=3)
    assert rep["language_model"] and rep["exact"]["bound"] == "exact"
    np.testing.assert_allclose(rep["per_sentence"]["nll"], hand, rtol=1e-5)
    assert rep["exact"]["nll_per_sentence"] == pytest.approx(hand.mean(), rel=1e-5)
    tokens = sum(len(s) + 1 for s in seqs)
    assert rep["exact"]["ppl_words_eos"] == pytest.approx(np.exp(hand.sum() / tokens), rel=1e-5)


def test_lm_cli_train_resume_evaluate(tmp_path):
    from sentencemim.cli import main
    args = ["train", "--corpus", "synthetic", "--objective", "lm", "--embedding-dim", "8", "--hidden-dim", "8",
            "--max-steps", "6", "--log-every", "2", "--out", str(tmp_path / "lm"), "--quiet"]
    assert main(args) == 0
    assert main(["train", "--out", str(tmp_path / "lm"), "--resume", "--max-steps", "10", "--quiet"]) == 0
    assert main(["evaluate", str(tmp_path / "lm"), "--json", str(tmp_path / "e.json")]) == 0
    import json
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["objective"] == "lm" and np.isfinite(rep["exact"]["nll_per_sentence"])
    # an lm with a latent size, or a latent model without one, is a user error
    assert main(["train", "--corpus", "synthetic", "--objective", "lm", "--latent-dim", "4",
                 "--out", str(tmp_path / "bad")]) == 2
