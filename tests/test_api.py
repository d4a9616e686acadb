"""The Python API (sentencemim.api.SentenceMIM): encode / decode / reconstruct /
sample / interpolate / encode_file / neighbors, on a model overfit to a tiny corpus."""

import warnings

import numpy as np
import pytest
import torch

from sentencemim import SentenceMIM
from sentencemim.api import OOVWarning, nearest
from sentencemim.data import collate
from sentencemim.errors import UserError

from conftest import TINY_SENTENCES

LINES = [" ".join(s) for s in TINY_SENTENCES]


@pytest.fixture
def api(overfit):
    return SentenceMIM(*overfit)


def test_sentences_reconstruct_from_their_mean_code(api):
    assert api.reconstruct(LINES, mode="mean") == LINES
    assert api.reconstruct(LINES, mode="mean", method="beam", beam_size=3) == LINES


def test_encode_returns_posterior_mean_and_std_in_input_order(api, overfit):
    model, vocab = overfit
    shuffled = [LINES[i] for i in (4, 1, 0, 5, 2, 3)]  # lengths 9, 3, 6, 2, 3, 3: not sorted
    mean, std = api.encode(shuffled, batch_size=2)  # three length-sorted batches
    assert mean.shape == std.shape == (6, 8) and mean.dtype == np.float32
    for i, s in enumerate(shuffled):
        ids = np.asarray(vocab.encode(s.split()))
        b = collate([ids], [0])
        with torch.no_grad():
            mu, logvar = model.encode(b.enc_in, b.lengths)
        np.testing.assert_allclose(mean[i], mu[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(std[i], torch.exp(0.5 * logvar[0]).numpy(), rtol=1e-5)
    assert np.allclose(api.encode(LINES[0])[0], api.encode([LINES[0]])[0])  # a str is one sentence


def test_decode_accepts_tensors_numpy_and_single_codes(api):
    mean, _ = api.encode(LINES)
    from_numpy = api.decode(mean)
    assert from_numpy == api.decode(torch.from_numpy(mean)) == LINES
    assert api.decode(mean[2]) == [LINES[2]]
    with pytest.raises(UserError, match="shape"):
        api.decode(np.zeros((2, 5)))
    with pytest.raises(UserError, match="decoding method"):
        api.decode(mean, method="nucleus")


def test_oov_words_map_to_unk_and_are_reported(api):
    with pytest.warns(OOVWarning, match=r"1 out-of-vocabulary word\(s\) mapped to <unk>: zebra"):
        z_oov = api.encode("the zebra sat")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corpus's own unk token is not OOV
        z_unk = api.encode("the <unk> sat")[0]
    np.testing.assert_array_equal(z_oov, z_unk)
    reported = []
    quiet = SentenceMIM(api.model, api.vocab, on_oov=reported.append)
    quiet.encode(["The Cat sat", "a dog ran"])
    assert reported == ["2 out-of-vocabulary word(s) mapped to <unk>: The, Cat"]
    lower = SentenceMIM(api.model, api.vocab, lowercase=True, on_oov=reported.append)
    np.testing.assert_array_equal(lower.encode("The Cat  sat")[0], api.encode("the cat sat")[0])
    assert len(reported) == 1


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_or_non_string_sentences_are_user_errors(api, bad):
    with pytest.raises(UserError):
        api.encode(["a dog ran", bad])


def test_perturbation_scale_zero_is_the_mean_and_sampling_is_seeded(api):
    assert api.reconstruct(LINES, mode="perturb", scale=0.0, seed=1) == LINES
    big = api.reconstruct(LINES, mode="perturb", scale=1000.0, seed=1)
    assert big == api.reconstruct(LINES, mode="perturb", scale=1000.0, seed=1)
    assert big != LINES  # far from the posterior the sentences change
    assert api.reconstruct(LINES, mode="perturb", scale=1000.0, seed=2) != big
    with pytest.raises(UserError, match="unknown mode"):
        api.reconstruct(LINES, mode="median")


def test_sample_uses_the_given_std_and_seed(api):
    a = api.sample(8, std=1.0, seed=0, method="sample")
    assert len(a) == 8 and a == api.sample(8, std=1.0, seed=0, method="sample")
    assert a != api.sample(8, std=1.0, seed=1, method="sample")
    # std 0: every code is the origin, so every greedy sample is the same sentence
    assert len(set(api.sample(4, std=0.0))) == 1
    assert api.sample(4, std=0.0) == api.decode(np.zeros((4, 8)))
    for bad in (0, -3, 2.5):
        with pytest.raises(UserError, match="positive integer"):
            api.sample(bad)


def test_interpolation_between_sentences_of_different_lengths(api):
    short, long = LINES[5], LINES[4]  # 2 and 9 words
    path = api.interpolate(short, long, steps=6, codes="mean")
    assert len(path) == 6
    assert path[0] == short and path[-1] == long  # both ends included
    mean, _ = api.encode([short, long])
    mid = mean[0] + 0.4 * (mean[1] - mean[0])  # t = 2/5
    assert path[2] == api.decode(mid)[0]
    sampled = api.interpolate(short, long, steps=6, seed=0)
    assert sampled == api.interpolate(short, long, steps=6, seed=0)
    with pytest.raises(UserError, match="steps"):
        api.interpolate(short, long, steps=1)


def test_encoding_a_file_equals_encoding_its_lines(api, tmp_path):
    f = tmp_path / "in.txt"
    # BOM, CRLF, blank lines and stray spaces; blank lines are skipped, not encoded
    f.write_bytes(("\ufeff" + LINES[0] + "\r\n\r\n  " + "\n".join(LINES[1:4]) + "\n   \n"
                   + "\n".join(LINES[4:]) + "\n\n").encode("utf-8"))
    ref_mean, ref_std = api.encode(LINES)
    rep = api.encode_file(f, chunk_size=4, batch_size=2)
    assert (rep["lines"], rep["sentences"], rep["empty"]) == (9, 6, 3)
    np.testing.assert_allclose(rep["mean"], ref_mean, atol=1e-6)
    np.testing.assert_allclose(rep["std"], ref_std, rtol=1e-5)
    rep = api.encode_file(f, tmp_path / "codes.npy", tmp_path / "std.npy", chunk_size=4, batch_size=2)
    codes = np.load(tmp_path / "codes.npy", allow_pickle=False)
    assert codes.shape == (6, 8) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, ref_mean, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "std.npy"), ref_std, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy", "in.txt", "std.npy"]  # no temp files
    with pytest.raises(UserError, match="file not found"):
        api.encode_file(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(UserError, match="no non-blank lines"):
        api.encode_file(tmp_path / "blank.txt")


def test_api_save_and_from_pretrained_round_trip(api, tmp_path):
    from_run = SentenceMIM(api.model, api.vocab, info={"train": {"objective": "mim"}, "step": 3,
                                                       "checkpoint": "runs/x/checkpoint-best.pt"})
    from_run.save_pretrained(tmp_path / "model")
    again = SentenceMIM.from_pretrained(tmp_path / "model")
    assert again.info == {"train": {"objective": "mim"}, "step": 3, "exported_from": "runs/x/checkpoint-best.pt"}
    assert again.objective == "mim"
    np.testing.assert_array_equal(again.encode(LINES)[0], api.encode(LINES)[0])
    assert again.reconstruct(LINES, "sample", seed=3, method="sample") == \
        api.reconstruct(LINES, "sample", seed=3, method="sample")
    with pytest.raises(UserError, match="no such model"):
        SentenceMIM.from_pretrained(tmp_path / "nope")


def test_neighbors_find_the_sentence_itself_first(api):
    index, _ = api.encode(LINES)
    rows, dist = api.neighbors(LINES[::-1], index, k=3)
    assert rows[:, 0].tolist() == list(range(5, -1, -1))
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(4, 5)), rng.normal(size=(30, 5))
    rows, dist = nearest(q, x, k=4)
    full = np.linalg.norm(q[:, None] - x[None], axis=-1)
    np.testing.assert_array_equal(rows, np.argsort(full, axis=1)[:, :4])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :4])
    rows_c, _ = nearest(q, x, k=2, metric="cosine")
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(rows_c, np.argsort(-cos, axis=1)[:, :2])
