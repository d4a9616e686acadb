import numpy as np
import pytest

from sentencemim.data import Dataset, bucket_batches, collate, read_sentences, sorted_batches
from sentencemim.errors import UserError
from sentencemim.vocab import Vocab


def test_special_ids_fixed_and_counts_ordered():
    v = Vocab.build([["b", "a", "b"], ["c", "b", "a"]])
    assert v.itos[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert (v.pad_id, v.unk_id, v.sos_id, v.eos_id) == (0, 1, 2, 3)
    assert v.itos[4:] == ["b", "a", "c"]  # by count, ties by first appearance


def test_corpus_unk_tokens_map_to_unk_id():
    v = Vocab.build([["<unk>", "x", "_UNK"]])
    assert len(v) == 5  # only 'x' is a word
    assert v.encode(["_UNK", "<unk>", "x", "never-seen"]) == [1, 1, 4, 1]
    assert v.count_oov(["_UNK", "x", "never-seen"]) == 1
    assert v.decode(v.encode(["_UNK", "x"])) == ["<unk>", "x"]


def test_min_count_and_max_size():
    sents = [["a"] * 5 + ["b"] * 3 + ["c"] * 1]
    assert Vocab.build(sents, min_count=2).itos[4:] == ["a", "b"]
    assert Vocab.build(sents, max_size=1).itos[4:] == ["a"]


def test_vocab_json_round_trip(tmp_path):
    v = Vocab.build([["héllo", "wörld", "_UNK"], ["wörld"]])
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w.itos == v.itos and w.stoi == v.stoi
    assert w.decode(w.encode(["wörld", "héllo", "zzz"])) == ["wörld", "héllo", "<unk>"]


def test_decode_stops_at_eos_and_skips_pad_sos():
    v = Vocab(["a", "b"])
    assert v.decode([2, 4, 5, 3, 4]) == ["a", "b"]
    assert v.decode([4, 0, 0]) == ["a"]


def test_read_policies(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"\xef\xbb\xbfone two\r\n\r\n   \nthree four five six\nseven\n")
    s, st = read_sentences(p, max_length=3, length_policy="drop")
    assert s == [["one", "two"], ["seven"]]
    assert (st.lines, st.empty, st.dropped_long, st.kept, st.words) == (5, 2, 1, 2, 3)
    s, st = read_sentences(p, max_length=3, length_policy="truncate")
    assert s[1] == ["three", "four", "five"] and st.truncated == 1 and st.kept == 3
    assert st.lines == st.kept + st.empty + st.dropped_long  # every line accounted for


def test_read_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"bad.txt:2: invalid UTF-8"):
        read_sentences(p)


def test_label_column(tmp_path):
    p = tmp_path / "y.txt"
    p.write_text("3\tgreat food\n1\tbad\n")
    s, _ = read_sentences(p, label_column=True)
    assert s == [["great", "food"], ["bad"]]


def test_collate_layout():
    b = collate([np.array([5, 6, 7]), np.array([8])], [10, 11])
    assert b.enc_in.tolist() == [[7, 6, 5, 2], [8, 2, 0, 0]]
    assert b.dec_in.tolist() == [[2, 5, 6, 7], [2, 8, 0, 0]]
    assert b.dec_tgt.tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    assert b.lengths.tolist() == [4, 2] and b.index.tolist() == [10, 11]


def test_bucket_batches_cover_each_sentence_once_and_are_seeded():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 50, size=1037)
    b1 = bucket_batches(lengths, 20, seed=3, epoch=0)
    flat = np.concatenate(b1)
    assert sorted(flat.tolist()) == list(range(1037))
    assert all(len(b) <= 20 for b in b1)
    assert [x.tolist() for x in b1] == [x.tolist() for x in bucket_batches(lengths, 20, 3, 0)]
    assert [x.tolist() for x in b1] != [x.tolist() for x in bucket_batches(lengths, 20, 3, 1)]
    # bucketing: much less padding than random batches
    pad = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in b1)
    perm = rng.permutation(1037)
    rand = [perm[i:i + 20] for i in range(0, 1037, 20)]
    pad_rand = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in rand)
    assert pad < 0.2 * pad_rand


def test_sorted_batches_and_subset():
    ds = Dataset([np.arange(n) + 4 for n in (5, 1, 3, 2)])
    assert [b.tolist() for b in sorted_batches(ds.lengths, 2)] == [[1, 3], [2, 0]]
    assert ds.num_tokens == 11 + 4
    sub = ds.subset(2, seed=0)
    assert len(sub) == 2 and len(ds.subset(0)) == 4
