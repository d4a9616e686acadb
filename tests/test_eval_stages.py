"""eval.stages: the finished stages of a long evaluation kept on disk, and an interrupted
analysis resumed from them to exactly the report an uninterrupted one gives."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from sentencemim.config import ReportConfig
from sentencemim.data import Dataset
from sentencemim.eval.heldout import HeldoutConfig
from sentencemim.eval.stages import Stages, _dec, _enc, fingerprint
from sentencemim.report import analyse_run


def _same(a, b, path="") -> None:
    """Deep equality (arrays exactly, NaN equal to NaN), ignoring wall times."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            if isinstance(k, str) and ("time" in k or k in ("seconds", "timing_s")):
                continue
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def test_values_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    value = {"f64": rng.normal(size=(3, 4)), "f32": rng.normal(size=5).astype(np.float32),
             "i64": np.arange(6, dtype=np.int64).reshape(2, 3), "bool": np.array([True, False]),
             "empty": np.zeros((0, 3)), "nan": [float("nan"), float("inf"), -float("inf")],
             "by_int": {1: 2.5, 10: 3.0}, "pair": (1, "a", None), "scalar": np.float32(0.1),
             "nested": [{"x": np.int64(3)}], "tensor": torch.arange(3.0), "third": 1 / 3}
    st = Stages(tmp_path / "s", {"k": 1})
    assert st.run("v", lambda: value) is value
    again = Stages(tmp_path / "s", {"k": 1}).run("v", lambda: pytest.fail("a kept stage was computed again"))
    tensor = again.pop("tensor")
    assert torch.equal(tensor, value["tensor"])
    _same({k: v for k, v in value.items() if k != "tensor"}, again)
    assert type(again["scalar"]) is np.float32 and list(again["by_int"]) == [1, 10]
    assert _dec(_enc(value["third"])) == value["third"]  # a float's repr round-trips
    with pytest.raises(TypeError, match="cannot be kept"):
        _enc({"x": object()})


def test_a_new_key_empties_the_folder_and_a_broken_stage_is_computed_again(tmp_path):
    calls = []

    def f(x):
        return lambda: calls.append(x) or x

    st = Stages(tmp_path / "s", {"step": 1})
    st.run("a", f(1)), st.run("b", f(2))
    assert st.kept() == ["a", "b"] and st.resumed == []
    st = Stages(tmp_path / "s", {"step": 1})
    assert st.run("a", f(10)) == 1 and st.resumed == ["a"] and calls == [1, 2]
    (tmp_path / "s" / "b.json").write_text('{"seconds": 1, "val')  # killed while written
    assert st.run("b", f(20)) == 20 and calls == [1, 2, 20]
    st = Stages(tmp_path / "s", {"step": 2})  # another checkpoint: nothing kept applies
    assert st.kept() == [] and st.run("a", f(30)) == 30
    st.clear()
    assert not (tmp_path / "s").exists()
    none = Stages()  # no folder: runs and times every stage, keeps nothing
    assert none.run("a", f(40)) == 40 and none.kept() == [] and "a" in none.seconds


def test_a_second_evaluation_on_the_same_folder_neither_empties_nor_mixes_the_first(tmp_path, capsys):
    """Another process keeps stages in the folder (and holds its lock): an evaluation with
    other settings then keeps none, and the first one's stages stay as they were."""
    folder = tmp_path / "s"
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sentencemim.eval.stages import Stages; "
         f"s = Stages({str(folder)!r}, {{'settings': 'full'}}); s.run('melbo_repeat_0', lambda: 1.0); "
         "print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "ready"
        second = Stages(folder, {"settings": "quick"})
        assert "another evaluation is keeping its stages" in capsys.readouterr().err
        assert second.run("melbo_repeat_0", lambda: 2.0) == 2.0 and second.kept() == []
        second.clear()
        key = json.loads((folder / "key.json").read_text())
        assert key["settings"] == "full" and len(key["code"]) == 64  # stages of other code are not reused
        assert (folder / "melbo_repeat_0.json").exists()
    finally:
        first.communicate("")  # the first process ends: its lock goes with it
    third = Stages(folder, {"settings": "quick"})
    assert third.folder is not None and third.kept() == []  # its key differs: the folder was emptied
    third.clear()
    assert not folder.exists() and not (tmp_path / "s.lock").exists()


def test_a_stage_that_cannot_be_kept_is_still_used(tmp_path, capsys):
    st = Stages(tmp_path / "s", {})
    import shutil
    shutil.rmtree(tmp_path / "s")  # e.g. removed from under a running evaluation
    assert st.run("iwae", lambda: 5) == 5
    assert "could not keep stage iwae" in capsys.readouterr().err


def test_fingerprint_tells_models_and_sentences_apart(tiny_model, tiny_dataset):
    a = fingerprint(tiny_model, tiny_dataset)
    assert a == fingerprint(tiny_model, tiny_dataset)
    assert a != fingerprint(tiny_model, tiny_dataset.take([0, 1, 2]))
    assert fingerprint(tiny_model, tiny_dataset, None, tiny_dataset) != fingerprint(tiny_model, tiny_dataset,
                                                                                   tiny_dataset, None)
    with torch.no_grad():
        tiny_model.out.bias[0] += 1e-6
    assert a != fingerprint(tiny_model, tiny_dataset)


def _sentences(vocab, n, seed):
    rng = np.random.default_rng(seed)
    return Dataset([rng.choice(np.arange(4, len(vocab)), rng.integers(2, 8)) for _ in range(n)])


@pytest.mark.parametrize("at", ["heldout_train_prior", "fig3_cross", "heldout_ais_subset", "bleu_sample_sample_1"])
def test_an_interrupted_analysis_resumes_to_the_uninterrupted_report(tiny_model, tiny_vocab, tmp_path, at,
                                                                     stop_at_stage):
    """Every costly stage, AIS and the training-mixture prior included; the stages before
    `at` are read back, the rest computed, and the report equals one computed in one go.
    A stage that drew from a random state another stage had advanced would differ here.
    heldout_ais_subset: AIS on a subset (from the prior and from fitted's Gaussian) is its own
    stage after the choice, which it reads back (fitted's chosen setting) when resumed.
    bleu_sample_sample_1: each BLEU decoding pass is a stage; the first is read back."""
    tiny_model.eval()
    test, valid, train = _sentences(tiny_vocab, 12, 0), _sentences(tiny_vocab, 4, 1), _sentences(tiny_vocab, 20, 2)
    rc = ReportConfig(repeats=2, iwae_k=6, agg_prior_m=8, bound_sentences=8, fig3_n=5, fig5_trials=3, seed=1,
                      device="cpu")
    ho = HeldoutConfig(heldout_methods="q,gauss,components,ais", heldout_test="all", widen_factors="3",
                       fixed_stds="0.3", component_candidates=4, ais_steps="2,3", ais_chains=2, ais_pilot_chains=1,
                       ais_leapfrog=2, gradient_precision="fp32")
    if at == "heldout_ais_subset":
        ho = HeldoutConfig(heldout_methods="q,gauss,fitted,ais,ais_fitted", heldout_test="chosen", widen_factors="3",
                           fixed_stds="0.3", fit_steps=2, ais_steps="2,3", ais_chains=2, ais_pilot_chains=1,
                           ais_leapfrog=2, ais_sentences=3, gradient_precision="fp32")
    info = {"step": 7, "train": {"corpus": "tiny", "objective": "mim"}}

    def analyse(stages):
        return analyse_run("tiny", tiny_model, tiny_vocab, info, test, train, rc, progress=False, heldout=ho,
                           valid=(valid, "4 valid"), stages=stages)

    whole = analyse(None)
    key = {"step": 7, "fp": fingerprint(tiny_model, test, valid, train)}
    stop_at_stage(at)
    with pytest.raises(KeyboardInterrupt):
        analyse(Stages(tmp_path / "st", key))
    stop_at_stage(None)
    done = Stages(tmp_path / "st", key).kept()
    assert "melbo_repeat_0" in done and at not in done
    resumed = Stages(tmp_path / "st", key)
    again = analyse(resumed)
    assert sorted(resumed.resumed) == done
    assert set(resumed.seconds) >= {"melbo_repeat_0", "melbo_repeat_1", "iwae", "heldout", "heldout_train_prior",
                                    "bleu_sample_sample_0", "bleu_sample_sample_1", "bleu_mean_greedy_0", "fig3_cross"}
    _same(whole, again)
    if at == "bleu_sample_sample_1":
        assert "bleu_sample_sample_0" in resumed.resumed and "bleu_sample_greedy_0" not in done
    if at == "heldout_ais_subset":
        assert "heldout" in resumed.resumed and "heldout_ais_subset" in resumed.seconds
        sub = again["report"]["heldout"]["ais_subset"]
        assert set(sub["methods"]) >= {"ais", "ais_fitted", "q"} and len(sub["index_in_split"]) == 3
        assert "std x" in sub["methods"]["ais_fitted"]["settings"]  # fitted's chosen widening, read back
        return
    json.dumps(again["report"]["heldout"]["methods"]["ais"]["convergence"])  # int step counts survive as keys
    assert list(again["report"]["heldout"]["methods"]["ais"]["convergence"]) == [2, 3]
