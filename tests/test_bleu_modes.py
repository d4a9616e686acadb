"""BLEU like the paper: its mode (z ~ q(z|x), sampling at temperature 1) comes first and is
averaged over R repeats with seeds seed..seed+R-1; deterministic modes are decoded once."""

import numpy as np
import pytest

from sentencemim.eval.bleu import BLEU_MODES, bleu_report, reconstructions
from sentencemim.metrics import bleu_scores


def test_paper_mode_first_and_averaged_over_repeats(tiny_model, tiny_dataset, tiny_vocab):
    assert BLEU_MODES[0] == ("sample", "sample")
    modes = bleu_report(tiny_model, tiny_dataset, tiny_vocab, repeats=3, seed=5)
    refs = [tiny_vocab.decode(s.tolist()) for s in tiny_dataset.seqs]
    each = [bleu_scores(refs, reconstructions(tiny_model, tiny_dataset, tiny_vocab, "sample", "sample", seed=5 + r))
            ["sentence_bleu1"] for r in range(3)]
    assert modes[0]["repeats"] == 3 and "temperature 1" in modes[0]["what"] and "R=3" in modes[0]["what"]
    assert modes[0]["sentence_bleu1"] == pytest.approx(np.mean(each))
    assert modes[0]["sentence_bleu1_std"] == pytest.approx(np.std(each))
    assert len(set(each)) > 1  # the repeats really differ (sampled decoding of an untrained model)
    mean_greedy = [m for m in modes if m["z"] == "mean"][0]
    assert mean_greedy["repeats"] == 1 and mean_greedy["sentence_bleu1_std"] == 0.0
