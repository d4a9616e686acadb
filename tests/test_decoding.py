"""Decoding: greedy, sampling, beam search; bans, seeds, batching, and beam
search checked against exhaustive search on a model small enough to enumerate."""

import itertools

import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.decoding import beam_search, decode
from sentencemim.model import SentenceAE

UNK, EOS = 1, 3


def peaked_model(vocab_size=20, seed=0):
    """A random tiny model whose output layer is scaled up, so the next-token
    distributions are far from uniform and different z give different sentences."""
    torch.manual_seed(seed)
    m = SentenceAE(ModelConfig(vocab_size=vocab_size, embedding_dim=8, hidden_dim=8, latent_dim=4))
    with torch.no_grad():
        m.out.weight.mul_(6.0)
        m.out.bias.normal_(0, 1.0)
    return m.eval()


def codes(n, seed=1, scale=3.0):
    return scale * torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sequence_logprob(model, z, seq, with_eos):
    """log p(seq [<eos>] | z) by one teacher-forced pass (independent of the step-wise decoders)."""
    tgt = list(seq) + ([EOS] if with_eos else [])
    dec_in = torch.tensor([[model.cfg.sos_id] + tgt[:-1]])
    logits, _ = model.logits(dec_in, z.unsqueeze(0))
    logp = torch.log_softmax(logits[0].double(), -1)
    return float(logp[torch.arange(len(tgt)), torch.tensor(tgt)].sum())


def test_beam_width_one_equals_greedy():
    m, z = peaked_model(), codes(40)
    greedy = decode(m, z, max_len=12)
    beam = decode(m, z, max_len=12, method="beam", beam_size=1)
    assert beam == greedy
    assert len({tuple(s) for s in greedy}) > 5  # the codes really decode to different sentences


@pytest.mark.parametrize("ban", [(), (UNK,)])
def test_beam_search_matches_exhaustive_search(ban):
    # vocabulary: 4 specials + 3 words; <pad>/<sos> are never produced
    m, z, max_len = peaked_model(vocab_size=7, seed=3), codes(4, seed=5), 3
    allowed = [t for t in (UNK, 4, 5, 6) if t not in ban]
    for b in range(z.shape[0]):
        # every hypothesis: k words then <eos> (k < max_len), or max_len words cut off
        hyps = [(seq, True) for k in range(max_len) for seq in itertools.product(allowed, repeat=k)]
        hyps += [(seq, False) for seq in itertools.product(allowed, repeat=max_len)]
        scored = [(sequence_logprob(m, z[b], s, e), list(s)) for s, e in hyps]
        best_score, best_seq = max(scored)
        ids, score = beam_search(m, z[b:b + 1], beam_size=len(hyps), max_len=max_len, ban=ban)
        assert ids[0] == best_seq
        assert score[0] == pytest.approx(best_score, abs=1e-4)
        # a narrow beam finds a hypothesis that is scored consistently, and no better than the optimum
        ids2, score2 = beam_search(m, z[b:b + 1], beam_size=2, max_len=max_len, ban=ban)
        ended = len(ids2[0]) < max_len  # else it was cut at max_len, without <eos>
        assert score2[0] == pytest.approx(sequence_logprob(m, z[b], ids2[0], ended), abs=1e-4)
        assert score2[0] <= best_score + 1e-6


def test_length_penalty_ranks_by_score_per_token():
    m, z, max_len, alpha = peaked_model(vocab_size=7, seed=3), codes(3, seed=6), 3, 1.0
    for b in range(z.shape[0]):
        hyps = [(s, True) for k in range(max_len) for s in itertools.product((UNK, 4, 5, 6), repeat=k)]
        hyps += [(s, False) for s in itertools.product((UNK, 4, 5, 6), repeat=max_len)]
        # tokens counted: words, plus <eos> when the hypothesis has one
        best = max((sequence_logprob(m, z[b], s, e) / (len(s) + e) ** alpha, list(s)) for s, e in hyps)
        ids, score = beam_search(m, z[b:b + 1], beam_size=len(hyps), max_len=max_len, length_penalty=alpha)
        assert ids[0] == best[1] and score[0] == pytest.approx(best[0], abs=1e-4)


def test_top_k_sampling_follows_the_renormalised_distribution():
    m = peaked_model()
    z = codes(1, seed=9).expand(4000, -1)
    with torch.no_grad():
        logits, _ = m.logits(torch.full((1, 1), m.cfg.sos_id), z[:1])
    logits = logits[0, -1]
    logits[[m.cfg.pad_id, m.cfg.sos_id]] = float("-inf")
    top = torch.topk(logits, 3)
    expected = torch.softmax(top.values / 0.8, -1)
    first = [s[0] if s else EOS for s in decode(m, z, max_len=1, method="sample", top_k=3, temperature=0.8,
                                                 generator=torch.Generator().manual_seed(0))]
    counts = torch.tensor([first.count(t) for t in top.indices.tolist()], dtype=torch.float)
    assert counts.sum() == len(first)  # nothing outside the top 3
    assert torch.allclose(counts / len(first), expected, atol=0.03)


def test_beam_of_five_scores_at_least_as_well_as_greedy_in_total():
    m, z = peaked_model(), codes(30, seed=2)
    g = decode(m, z, max_len=10)
    _, s5 = beam_search(m, z, beam_size=5, max_len=10)
    g_scores = [sequence_logprob(m, z[i], g[i], len(g[i]) < 10) for i in range(len(g))]
    assert sum(s5) >= sum(g_scores) - 1e-4


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_banned_tokens_never_appear(method):
    m, z = peaked_model(), codes(100, seed=4)
    gen = torch.Generator().manual_seed(0)
    free = decode(m, z, max_len=15, method=method, temperature=2.0, generator=gen, beam_size=3)
    used = {t for s in free for t in s}
    banned = sorted(used - {EOS})[:3]  # the model uses these when allowed to
    assert len(banned) == 3
    out = decode(m, z, max_len=15, method=method, temperature=2.0, ban=banned,
                 generator=torch.Generator().manual_seed(0), beam_size=3)
    assert not {t for s in out for t in s} & set(banned)
    assert any(out)  # still produced words


def test_sampling_is_deterministic_under_a_seed():
    m, z = peaked_model(), codes(20)

    def run(seed, **kw):
        return decode(m, z, max_len=12, method="sample", generator=torch.Generator().manual_seed(seed), **kw)
    assert run(7) == run(7)
    assert run(7, top_k=5, temperature=0.7) == run(7, top_k=5, temperature=0.7)
    assert run(7) != run(8)


def test_top_k_one_and_tiny_top_p_equal_greedy():
    m, z = peaked_model(), codes(20)
    greedy = decode(m, z, max_len=12)
    gen = torch.Generator().manual_seed(0)
    assert decode(m, z, max_len=12, method="sample", top_k=1, generator=gen) == greedy
    assert decode(m, z, max_len=12, method="sample", top_p=1e-6, generator=gen) == greedy


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_batched_equals_one_at_a_time(method):
    m, z = peaked_model(), codes(12)
    batched = decode(m, z, max_len=12, method=method, beam_size=3)
    single = [decode(m, z[i:i + 1], max_len=12, method=method, beam_size=3)[0] for i in range(len(z))]
    assert batched == single


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_max_len_bounds_every_sentence(method):
    m, z = peaked_model(), codes(30)
    out = decode(m, z, max_len=4, method=method, generator=torch.Generator().manual_seed(0))
    assert max(len(s) for s in out) == 4  # some sentences hit the cap; none exceeds it
    assert EOS not in {t for s in out for t in s}


def test_unknown_method_is_an_error():
    m = peaked_model()
    with pytest.raises(ValueError, match="unknown decoding method"):
        decode(m, codes(1), method="nucleus")
