"""Checks on the real corpora (../shared/data or $SENTENCEMIM_TEST_DATA); skipped
with the reason where they are absent. Expected counts are those published in the
data folder's README."""

import json
import math
import subprocess
import sys

import pytest

from sentencemim import corpora
from sentencemim.data import read_sentences

from conftest import shared_corpus


@pytest.mark.corpus
@pytest.mark.parametrize("corpus,split,lines,kept,words", [
    ("ptb", "train", 42068, 42068, 887521),
    ("ptb", "valid", 3370, 3370, 70390),
    ("ptb", "test", 3761, 3761, 78669),
    ("wikitext-2", "train", 36718, 23767, 2051910),
    ("wikitext-2", "test", 4358, 2891, 241211),
    ("yahoo", "valid", 10000, 10000, 790680),
])
def test_reading_matches_published_counts(corpus, split, lines, kept, words):
    data = shared_corpus(corpora.CORPORA[corpus].folder)
    rc = corpora.resolve(corpus, str(data), download=False, splits=(split,))
    _, st = read_sentences(rc.files[split][0])
    assert (st.lines, st.kept, st.words, st.empty) == (lines, kept, words, lines - kept)


@pytest.mark.corpus
def test_shared_ptb_passes_the_download_checksums():
    data = shared_corpus("ptb")
    for split, src in corpora.CORPORA["ptb"].sources.items():
        corpora.verify((data / "ptb" / f"{split}.txt").read_bytes(), src, f"ptb/{split}")


@pytest.mark.corpus
@pytest.mark.slow
def test_ptb_training_lowers_validation_loss_and_evaluates_finite(tmp_path):
    data = shared_corpus("ptb")
    run = tmp_path / "run"
    smim = [sys.executable, "-m", "sentencemim.cli"]
    r = subprocess.run(smim + ["train", "--corpus", "ptb", "--data-dir", str(data), "--objective", "mim",
                               "--latent-dim", "16", "--embedding-dim", "32", "--hidden-dim", "64",
                               "--max-steps", "50", "--lr", "0.003", "--eval-max-sentences", "200", "--out", str(run)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "42068 lines read, 42068 kept" in r.stderr
    val = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    val = [v for v in val if v["kind"] == "valid"]
    assert val[0]["step"] == 0 and val[-1]["step"] == 50
    assert val[-1]["loss"] < val[0]["loss"] and val[-1]["rec_per_sentence"] < val[0]["rec_per_sentence"]
    out = tmp_path / "eval.json"
    r = subprocess.run(smim + ["evaluate", str(run), "--data-dir", str(data), "--max-sentences", "100",
                               "--repeats", "2", "--iwae-k", "3", "--agg-prior-m", "30", "--heldout-valid", "10",
                               "--fit-steps", "3", "--component-candidates", "10", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())

    def numbers(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from numbers(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            yield x
    vals = list(numbers({k: rep[k] for k in ("reconstruction", "kl", "melbo", "elbo", "bleu")}))
    assert len(vals) > 15 and all(math.isfinite(v) for v in vals)
    for key in ("heldout", "heldout_train_prior"):  # the tightest bounds, on real text, every default method
        assert math.isfinite(rep[key]["nll_per_sentence"]) and rep[key]["nll_per_sentence"] <= \
            rep["iwae" if key == "heldout" else "iwae_train_prior"]["nll_per_sentence"] + 50
