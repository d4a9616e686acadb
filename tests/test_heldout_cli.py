"""`smim evaluate` with the held-out methods, --quick, the AE's deterministic encoder,
and the benchmark script, on a tiny synthetic run."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sentencemim.cli import main
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.eval.evaluate import evaluate
from sentencemim.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "syn"
    mp = pytest.MonkeyPatch()
    mp.setenv("SENTENCEMIM_DATA", str(out.parent / "data"))
    train(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=2),
          TrainConfig(corpus="synthetic", max_steps=10, batch_size=50, eval_max_sentences=50, seed=0), out, quiet=True)
    yield out
    mp.undo()


def test_evaluate_quick_reports_the_tightest_bounds_and_what_it_left_out(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    js = tmp_path / "q.json"
    assert main(["evaluate", str(tiny_run), "--quick", "--max-sentences", "30", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "--quick: 30 sentences" in out and "no BLEU" in out and "K=10" in out
    rep = json.loads(js.read_text())
    assert rep["iwae"]["k"] == 10 and rep["melbo"]["repeats"] == 2 and "bleu" not in rep
    for key, prior in (("heldout", "N(0,I)"), ("heldout_train_prior", "training aggregate posterior")):
        b = rep[key]
        assert b["prior"].startswith(prior) and b["method"] in b["methods"]
        assert 1 <= b["ess_min"] <= b["ess_mean"] <= 10 and set(b["convergence"]) == {"1", "10"}
        assert "valid sentences" in b["chosen_on"]
        # the reported bound is the chosen method's own test bound, and q-only IWAE is among the methods
        assert b["nll_per_sentence"] == pytest.approx(b["methods"][b["method"]]["nll_per_sentence"])
        assert b["methods"]["q"]["nll_per_sentence"] == pytest.approx(
            rep["iwae" if key == "heldout" else "iwae_train_prior"]["nll_per_sentence"])
    tried = {k: {**rep[k]["methods"], **rep[k]["validation_only"]} for k in ("heldout", "heldout_train_prior")}
    assert "components" in tried["heldout_train_prior"] and "components" not in tried["heldout"]
    assert "tightest held-out bound, prior N(0,I)" in out and "ESS mean" in out


def test_an_interrupted_evaluate_resumes_where_it_stopped(tiny_run, tmp_path, monkeypatch, capsys, stop_at_stage):
    """`smim evaluate RUN` keeps finished stages in RUN/evaluate-stages-SPLIT: run again after
    Ctrl-C, it reads them back and prints the numbers an uninterrupted evaluation prints."""
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    cmd = ["evaluate", str(tiny_run), "--quick", "--max-sentences", "30"]
    assert main(cmd + ["--json", str(tmp_path / "whole.json")]) == 0
    assert not (tiny_run / "evaluate-stages-test").exists()
    stop_at_stage("heldout")
    assert main(cmd) == 130
    stop_at_stage(None)
    capsys.readouterr()
    assert main(cmd + ["--json", str(tmp_path / "again.json")]) == 0
    assert "resuming an interrupted evaluation: 3 stage(s) already done (iwae, melbo_repeat_0, melbo_repeat_1)" \
        in capsys.readouterr().err
    whole, again = (json.loads((tmp_path / f).read_text()) for f in ("whole.json", "again.json"))
    for key in ("melbo", "iwae", "heldout", "heldout_train_prior", "elbo"):
        assert again[key]["nll_per_sentence"] == whole[key]["nll_per_sentence"], key
    assert sorted(again["resumed_stages"]) == ["iwae", "melbo_repeat_0", "melbo_repeat_1"]
    assert not (tiny_run / "evaluate-stages-test").exists()
    # a model directory (no checkpoints, perhaps committed) gets no stage folder
    model_dir = tmp_path / "exported"
    assert main(["export", str(tiny_run), "--out", str(model_dir)]) == 0
    stop_at_stage("heldout")
    assert main(["evaluate", str(model_dir), "--quick", "--max-sentences", "30", "--corpus", "synthetic"]) == 130
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                           "vocab.json"]


def test_evaluate_heldout_flags_and_errors(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    js = tmp_path / "a.json"
    assert main(["evaluate", str(tiny_run), "--max-sentences", "8", "--no-bleu", "--repeats", "1", "--iwae-k", "20",
                 "--agg-prior-m", "0", "--heldout-methods", "q,ais,ais_fitted", "--ais-steps", "2,5", "--ais-chains",
                 "4", "--heldout-valid", "4", "--heldout-test", "all", "--bdmc-sentences", "2", "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    for m in ("ais", "ais_fitted"):
        a = rep["heldout"]["methods"][m]
        assert set(a["convergence"]) == {"2", "5"} and a["k"] == 4 and "heldout_train_prior" not in rep
    assert "from the Gaussian fitted per sentence" in rep["heldout"]["methods"]["ais_fitted"]["settings"]
    b = rep["heldout"]["bdmc"]  # for the chosen AIS method, else the first that ran
    assert b["method"] == (rep["heldout"]["method"] if rep["heldout"]["method"] in ("ais", "ais_fitted") else "ais")
    assert b["upper_mean"] >= b["lower_mean"] - 1.0
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), "--heldout-methods", "q,magic"]) == 2
    assert "unknown held-out method(s) magic" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--defensive-weights", "1.5"]) == 2
    # --ais-sentences sets AIS aside: it needs an AIS method, another method to choose, and no BDMC
    for flags, said in ((["--heldout-methods", "q,gauss"], "needs an AIS method"),
                        (["--heldout-methods", "ais"], "needs a method besides ais"),
                        (["--heldout-methods", "q,ais", "--bdmc-sentences", "2"], "use one or the other")):
        capsys.readouterr()
        assert main(["evaluate", str(tiny_run), "--ais-sentences", "3", *flags]) == 2
        assert said in capsys.readouterr().err


def test_ae_is_scored_through_its_mean(tiny_model, tiny_vocab, tiny_dataset):
    tiny_model.eval()
    with torch.no_grad():
        tiny_model.to_logvar.bias.fill_(0.0)  # an untrained variance head: std ~1
    rep = evaluate(tiny_model, tiny_dataset, tiny_vocab, repeats=3, iwae_k=0, objective="ae", latent=False)
    rc = rep["reconstruction"]
    assert rc["nll_per_sentence"] == pytest.approx(rc["nll_per_sentence_at_mean_z"]) and "AE" in rc["what"]
    assert rep["melbo"]["nll_per_sentence_std"] == 0.0  # deterministic: every repeat is the same
    assert all("z = mean" in m["what"] for m in rep["bleu_modes"])
    mim = evaluate(tiny_model, tiny_dataset, tiny_vocab, repeats=1, iwae_k=0, objective="mim", latent=False, bleu=False)
    assert mim["reconstruction"]["nll_per_sentence"] != pytest.approx(rc["nll_per_sentence"])


def test_benchmark_script_runs_on_a_tiny_model(tiny_run, monkeypatch, capsys):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    spec = importlib.util.spec_from_file_location("heldout_methods", ROOT / "benchmarks" / "heldout_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tiny_run), "--sentences", "6", "--valid", "4", "--k", "5", "--agg-prior-m", "20",
                     "--methods", "q,prior,gauss,components", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "gain vs q" in out and "components" in out and out.count("prior ") >= 2
    q_rows = [l for l in out.splitlines() if l.strip().startswith("q ")]
    assert len(q_rows) == 2 and all("+0.000" in l for l in q_rows)  # q gains nothing over itself


def test_methods_run_without_gauss_and_for_an_ae(tiny_model, tiny_dataset):
    """defensive and fitted start from q (an AE: a fixed std around its mean) when gauss is not run."""
    from sentencemim.eval.heldout import HeldoutConfig, heldout_bounds
    tiny_model.eval()
    cfg = HeldoutConfig(heldout_methods="defensive,fitted", heldout_test="all", fit_steps=2, defensive_weights="0.5")
    for objective, start in (("mim", "q's std x 1"), ("ae", "std 0.3")):
        res = heldout_bounds(tiny_model, tiny_dataset, tiny_dataset, None, cfg, 4, objective)
        assert set(res["methods"]) == {"defensive", "fitted"} and start in res["methods"]["defensive"]["settings"]
        assert np.all(np.isfinite(res["per_sentence"]))


def _random_sentences(vocab, n, seed=0):
    """n sentences of 2-7 words drawn from the tiny vocabulary (more than the 6 of tiny_dataset)."""
    from sentencemim.data import Dataset
    rng = np.random.default_rng(seed)
    words = np.arange(4, len(vocab))  # past the specials
    return Dataset([rng.choice(words, rng.integers(2, 8)) for _ in range(n)])


def test_chosen_mode_scores_only_the_chosen_method_and_q(tiny_model, tiny_vocab):
    """heldout_test 'chosen' runs the method chosen on validation (and q) on the scored
    sentences, with exactly the bound 'all' gives that method, and keeps the others'
    validation figures."""
    from sentencemim.eval.heldout import HeldoutConfig, heldout_bounds
    tiny_model.eval()
    test, valid = _random_sentences(tiny_vocab, 12, 0), _random_sentences(tiny_vocab, 8, 1)
    out = {}
    for mode in ("all", "chosen"):
        cfg = HeldoutConfig(heldout_methods="q,prior,gauss,defensive", heldout_test=mode, widen_factors="1,10",
                            fixed_stds="0.3", defensive_weights="0.5")
        out[mode] = heldout_bounds(tiny_model, test, valid, None, cfg, 8, "mim", seed=3)
    a, c = out["all"], out["chosen"]
    assert a["chosen"] == c["chosen"] and set(a["methods"]) == {"q", "prior", "gauss", "defensive"}
    assert set(c["methods"]) == {"q", a["chosen"]} and not a["validation_only"]
    assert set(c["validation_only"]) == {"q", "prior", "gauss", "defensive"} - set(c["methods"])
    np.testing.assert_allclose(c["per_sentence"], a["per_method"][a["chosen"]])
    for m, v in c["validation_only"].items():
        assert v["valid_nll_per_sentence"] == pytest.approx(a["methods"][m]["valid_nll_per_sentence"])
    from sentencemim.eval.heldout import entry_fields, format_heldout
    lines = format_heldout(entry_fields(c, {"nll_per_sentence": 1.0, "what": "x", "prior": "N(0,I)", "samples": "K=8"}))
    assert sum("not run on these sentences" in line for line in lines) == len(c["validation_only"])


def test_bounds_on_a_subset_are_the_bounds_of_that_subset(tiny_model, tiny_vocab):
    """--bound-sentences: IWAE and the held-out bounds on a seeded subset equal those of an
    evaluation of exactly those sentences; the ELBO, MELBO and BLEU stay on all."""
    from sentencemim.eval.heldout import HeldoutConfig
    tiny_model.eval()
    ds, valid = _random_sentences(tiny_vocab, 16, 0), _random_sentences(tiny_vocab, 4, 1)
    cfg = HeldoutConfig(heldout_methods="q,gauss", widen_factors="3", fixed_stds="0.3")
    kw = dict(repeats=3, iwae_k=6, latent=False, bleu=False, objective="mim", heldout=cfg, valid_ds=valid, seed=1)
    sub = evaluate(tiny_model, ds, tiny_vocab, bound_sentences=5, **kw)
    idx = sub["per_sentence"]["bound_index"]
    assert len(idx) == 5 and np.all(np.diff(idx) > 0) and set(idx) <= set(range(16))
    np.testing.assert_array_equal(idx, ds.subset_index(5, 1))
    assert set(ds.subset_index(3, 1)) <= set(idx)  # nested: a smaller subset lies within a larger one
    direct = evaluate(tiny_model, ds.take(idx), tiny_vocab, **kw)
    for key in ("iwae", "heldout"):
        assert sub[key]["sentences"] == 5 and sub[key]["subset"]["of"] == 16 and "on 5 of 16" in sub[key]["samples"]
        for f in ("nll_per_sentence", "ppl_words_eos"):
            assert sub[key][f] == pytest.approx(direct[key][f], rel=1e-9), (key, f)
        assert sub["per_sentence"][key].shape == (5,)
    # the ELBO stays on every sentence: the mean over the MELBO repeats of -log p(x|z) plus the KL
    assert sub["elbo"]["sentences"] == 16 and sub["per_sentence"]["elbo"].shape == (16,)
    assert sub["sentences"] == 16 and sub["bound_subset"]["n"] == 5
    full = evaluate(tiny_model, ds, tiny_vocab, **kw)
    assert sub["melbo"]["nll_per_sentence"] == pytest.approx(full["melbo"]["nll_per_sentence"])
    assert abs(sub["elbo"]["nll_per_sentence"] - full["elbo"]["nll_per_sentence"]) < 0.1 * full["elbo"]["nll_per_sentence"]


def test_ais_start_benchmark_runs_on_a_tiny_model(tiny_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    spec = importlib.util.spec_from_file_location("ais_start", ROOT / "benchmarks" / "ais_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    js = tmp_path / "s.json"
    assert mod.main([str(tiny_run), "--sentences", "3", "--steps", "3", "--chains", "2", "--threads", "1",
                     "--json", str(js)]) == 0
    res = json.loads(js.read_text())["results"]
    assert set(res) == {"prior", "fitted", "fitted-identity", "fitted-x2"}
    assert all(len(r["per_sentence"]) == 3 and math.isfinite(r["mean"]) for r in res.values())
    assert res["fitted"]["mean"] != res["fitted-x2"]["mean"]  # the widened start is a different start


def test_hmc_gradient_benchmark_runs_on_a_tiny_model(tiny_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    spec = importlib.util.spec_from_file_location("hmc_gradient", ROOT / "benchmarks" / "hmc_gradient.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    js = tmp_path / "h.json"
    assert mod.main([str(tiny_run), "--sentences", "3", "--steps", "3", "--chains", "2", "--threads", "1",
                     "--gradients", "fp32", "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    assert out["sentences"] == 3 and [r["hmc_gradient"] for r in out["results"]] == ["fp32"]
    assert math.isfinite(out["results"][0]["bound"]) and out["results"][0]["time_s"] > 0
    assert "first 3 test sentences" in capsys.readouterr().out


def test_khat_without_a_tail_fit_says_so_instead_of_nan_and_0_percent():
    from sentencemim.eval.heldout import _khat_text
    assert _khat_text({"khat_median": float("nan"), "khat_share_above_0.7": 0.0}).startswith("Pareto k-hat n/a")
    assert _khat_text({"khat_median": 0.81, "khat_share_above_0.7": 0.6}) == \
        "Pareto k-hat median 0.81 (60% of sentences > 0.7)"
    assert _khat_text({"khat_median": float("nan")}, short=True) == "k-hat n/a (no tail fit)"


def test_ais_convergence_benchmark_runs_on_a_tiny_model_beside_its_lm(tiny_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    lm = tmp_path / "lm"
    train(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=0),
          TrainConfig(corpus="synthetic", objective="lm", max_steps=5, batch_size=50, eval_max_sentences=50, seed=0),
          lm, quiet=True)
    spec = importlib.util.spec_from_file_location("ais_convergence", ROOT / "benchmarks" / "ais_convergence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    js = tmp_path / "c.json"
    assert mod.main([str(tiny_run), "--sentences", "3", "--steps", "4,2", "--chains", "2", "--pilot", "1",
                     "--lm", str(lm), "--gradient-precision", "fp32", "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    assert [r["steps"] for r in out["runs"]] == [2, 4] and out["sentences"] == 3
    assert all(len(r["nll"]) == 3 and r["nll_mean"] == pytest.approx(np.mean(r["nll"])) for r in out["runs"])
    # the LM's NLL on the same 3 sentences is what `smim evaluate` reports for them
    ev = tmp_path / "lm.json"
    assert main(["evaluate", str(lm), "--max-sentences", "3", "--json", str(ev)]) == 0
    assert out["lm_nll_mean"] == pytest.approx(json.loads(ev.read_text())["exact"]["nll_per_sentence"])
    assert "T =      4:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main([str(tiny_run), "--steps", "0"])
    with pytest.raises(SystemExit):
        mod.main([str(lm)])
    with pytest.raises(SystemExit):  # a model with a latent is no LM
        mod.main([str(tiny_run), "--steps", "1", "--lm", str(tiny_run)])


def test_a_tail_too_extreme_to_fit_is_the_heaviest_not_a_pass():
    """A few weights so far above the rest that the others underflow: the tail fit overflows.
    That is k-hat +inf, never a pass; NaN only where K < 20. (Treated as a pass, it once made
    the validation choice prefer a Gaussian fitted per sentence, ESS 2.6 of 100, to q itself
    for the PTB sVAE (512), whose test bound then came out 0.9 nats above q-only IWAE.)"""
    from sentencemim.eval import proposals as P
    from sentencemim.eval.heldout import _khat_text, _pick, _score, khat_median
    rng = np.random.default_rng(0)
    extreme = np.stack([np.r_[0.0, np.full(99, -1000.0)], np.r_[0.0, 0.0, np.full(98, -800.0)]])
    light = rng.normal(0.0, 0.3, (2, 100))
    assert np.all(P.pareto_khat(extreme) == np.inf)
    assert np.all(np.isnan(P.pareto_khat(extreme[:, :10])))  # too few weights: no fit
    assert np.all(P.pareto_khat(light) < 0.7)
    assert khat_median(np.array([np.inf, np.inf, 0.3])) == np.inf and math.isnan(khat_median(np.full(3, np.nan)))
    # the choice: a method whose tails cannot be fitted does not pass the k-hat filter, so a lower
    # score with a heavy (but fitted) tail wins, as the sVAE's q should have
    fitted, q = _score(extreme), _score(light + 2.0)
    assert fitted[2] == np.inf
    assert _pick({"fitted": (108.79, None, fitted[2]), "q": (107.14, None, 0.77)}) == "q"
    assert _pick({"fitted": (108.79, None, fitted[2]), "q": (107.14, None, 0.5)}) == "q"
    assert _pick({"a": (5.0, None, float("nan")), "b": (4.0, None, 0.9)}) == "a"  # K < 20: accepted
    assert _khat_text({"khat_median": np.inf, "khat_share_above_0.7": 1.0}, short=True).startswith("k-hat median inf")
