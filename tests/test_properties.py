"""Property-based tests (hypothesis) for the vocabulary and batching."""

import numpy as np
from hypothesis import given, settings, strategies as st

from sentencemim.data import bucket_batches, collate, sorted_batches
from sentencemim.vocab import SPECIALS, Vocab

word = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp"), blacklist_characters="\x85"),
               min_size=1, max_size=6)
sentences = st.lists(st.lists(word, min_size=1, max_size=12), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(sentences)
def test_encode_decode_round_trip_for_in_vocabulary_words(sents):
    v = Vocab.build(sents)
    for s in sents:
        expected = ["<unk>" if w in v.unk_aliases else w for w in s]
        if any(w in SPECIALS for w in s):
            continue  # special-token spellings in the text are not words
        assert v.decode(v.encode(s)) == expected
    assert len(set(v.itos)) == len(v.itos)


@settings(max_examples=60, deadline=None)
@given(sentences, st.lists(word, min_size=1, max_size=8))
def test_unknown_words_map_to_unk_and_json_round_trip(sents, other):
    v = Vocab.build(sents)
    ids = v.encode(other)
    for w, i in zip(other, ids):
        assert (i == v.unk_id) == (w not in v.stoi or w in v.unk_aliases)
    w2 = Vocab.from_json(v.to_json())
    assert w2.encode(other) == ids


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=400), st.integers(1, 25), st.integers(0, 5),
       st.integers(0, 3))
def test_every_sentence_in_exactly_one_batch(lengths, batch_size, seed, epoch):
    batches = bucket_batches(lengths, batch_size, seed, epoch)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    flat2 = np.concatenate(sorted_batches(lengths, batch_size))
    assert sorted(flat2.tolist()) == list(range(len(lengths)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(4, 50), min_size=1, max_size=15), min_size=1, max_size=10))
def test_collate_keeps_every_token(seqs):
    arrays = [np.array(s) for s in seqs]
    b = collate(arrays, list(range(len(seqs))))
    for i, s in enumerate(seqs):
        n = len(s)
        assert b.lengths[i] == n + 1
        assert b.dec_tgt[i, :n].tolist() == s and b.dec_tgt[i, n] == 3
        assert b.dec_in[i, 1:n + 1].tolist() == s and b.dec_in[i, 0] == 2
        assert b.enc_in[i, :n].tolist() == s[::-1] and b.enc_in[i, n] == 2
        assert (b.dec_tgt[i, n + 1:] == 0).all()
