"""`smim report` end to end on a tiny synthetic run: files written, every number labelled."""

import json
import re
import numpy as np
import pytest
import torch

from sentencemim.cli import main
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.errors import UserError
from sentencemim.report import ReportConfig, parse_reference
from sentencemim.train import train

pytestmark = pytest.mark.real_figures  # every kind of figure the project draws is rendered here

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "syn"
    mp = pytest.MonkeyPatch()
    mp.setenv("SENTENCEMIM_DATA", str(out.parent / "data"))
    mc = ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=2)
    tc = TrainConfig(corpus="synthetic", max_steps=10, batch_size=50, eval_max_sentences=50, seed=0)
    train(mc, tc, out, quiet=True)
    yield out
    mp.undo()


def test_report_cli_writes_a_labelled_page(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    out = tmp_path / "rep"
    args = ["report", str(tiny_run), "--out", str(out), "--max-sentences", "60", "--iwae-k", "4",
            "--agg-prior-m", "20", "--repeats", "2", "--fig3-n", "8", "--fig5-trials", "5",
            "--reference-nll", "some LM=9.5"]
    assert main(args) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "results.json", "syn-fig3.png", "syn-fig5.png", "syn-fig6.png",
            "syn-per-sentence.npz"} <= files
    for png in ("syn-fig3.png", "syn-fig5.png", "syn-fig6.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.md").read_text()
    # the bounds table: one row per bound, each with bound, prior, samples, NLL, both PPLs and the truth gap
    rows = [l for l in page.splitlines() if l.startswith("| ") and any(
        l.startswith(f"| {b}") for b in ("MELBO", "ELBO", "IWAE", "exact"))]
    assert len(rows) == 7
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) == 7, row  # no stray '|' splitting a cell
        assert cells[1].strip()  # the prior is named
    assert "NOT held-out" in page and "training aggregate posterior, M=20" in page and "[paper]" in page
    assert "some LM = 9.50" in page and "10^" in page
    res = json.loads((out / "results.json").read_text())
    rep = res["runs"][0]["report"]
    assert rep["sentences"] == 60 and "truth" in rep  # corpus synthetic: the exact NLL is beside the bounds
    for key in ("melbo", "elbo", "elbo_single", "iwae", "iwae_train_prior", "truth"):
        assert {"bound", "prior", "samples", "nll_per_sentence", "ppl_words_eos", "ppl_paper"} <= set(rep[key])
    assert rep["truth"]["nll_per_sentence"] < rep["iwae"]["nll_per_sentence"]  # a bound is above the truth
    per = np.load(out / "syn-per-sentence.npz")
    assert per["iwae"].shape == (60,) and per["true_nll"].shape == (60,)
    what = json.loads(str(per["_what"]))  # every saved array says what it holds
    assert set(what) == set(per.files) - {"_what"} and all(what.values())
    assert rep["fig5"]["sizes"][-1] == 60 and rep["fig5"]["mean"][-1] == pytest.approx(
        per["rec"].mean() + np.log(60))


def test_report_argument_errors():
    assert parse_reference(["a=b=1.5"]) == {"a=b": 1.5}
    for bad in (["nonumber"], ["x=abc"], ["=3"]):
        with pytest.raises(UserError, match="LABEL=NATS"):
            parse_reference(bad)
    with pytest.raises(UserError, match="fig3_n must be >= 2"):
        ReportConfig(fig3_n=1).validate()
    with pytest.raises(UserError, match="split"):
        ReportConfig(split="dev").validate()
    with pytest.raises(UserError, match="device must be auto.*'gpu0'"):
        ReportConfig(device="gpu0").validate()
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            ReportConfig(device="cuda").validate()
    cfg = ReportConfig(device="auto")
    cfg.validate()
    assert cfg.device in ("cpu", "cuda:0")


def test_fig5_targets_are_this_models_bounds_the_others_lowest_and_the_language_models_exact_nll():
    from sentencemim.report import _targets

    def bound(name, v):
        return {"bound": name, "nll_per_sentence": v}

    runs = [{"name": "a", "report": {"iwae": bound("IWAE_100", 300.0), "heldout": bound("tightest (fitted)", 200.0),
                                     "heldout_train_prior": bound("tightest (components)", 150.0)}},
            {"name": "b", "report": {"iwae": bound("IWAE_100", 120.0), "heldout": bound("tightest (q)", 119.0),
                                     "iwae_train_prior": bound("IWAE_100", 125.0)}},
            {"name": "lm", "report": {"exact": {"bound": "exact", "nll_per_sentence": 109.3}}}]
    got = _targets(runs, 0, {"paper": 67.5})
    assert got == {"IWAE_100, prior N(0,I) (this model)": 300.0,
                   "tightest (fitted), prior N(0,I) (this model)": 200.0,
                   "tightest (components), prior training aggregate posterior (this model)": 150.0,
                   "tightest (q), prior N(0,I) (b's lowest)": 119.0,
                   "exact NLL, language model (lm)": 109.3,
                   "paper": 67.5}
    assert _targets(runs, 1, {})["tightest (components), prior training aggregate posterior (a's lowest)"] == 150.0


def test_runs_with_one_folder_name_get_different_labels_and_files(tmp_path):
    """Two runs named smim in different folders used to share one name on the page: one's
    values overwrote the other's figures and Fig. 5 targets."""
    from sentencemim.report import file_stems, run_labels
    a, b, c = tmp_path / "x" / "smim", tmp_path / "y" / "smim", tmp_path / "x" / "vae"
    assert run_labels([a, b, c]) == ["x/smim", "y/smim", "vae"]
    assert run_labels([tmp_path / "p" / "q" / "r", tmp_path / "s" / "q" / "r"]) == ["p/q/r", "s/q/r"]
    assert run_labels([a]) == ["smim"]
    with pytest.raises(UserError, match="given twice"):
        run_labels([a, tmp_path / "x" / ".." / "x" / "smim"])
    # checkpoint files are named with their run's folder; a link by the name it was given
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "checkpoint-best.pt").write_bytes(b"")
    assert run_labels([a / "checkpoint-best.pt", b / "checkpoint-best.pt", c]) == \
        ["x/smim/checkpoint-best.pt", "y/smim/checkpoint-best.pt", "vae"]
    assert run_labels([a / "checkpoint-best.pt"]) == ["smim/checkpoint-best.pt"]
    (tmp_path / "best").symlink_to(a)
    assert run_labels([tmp_path / "best", b]) == ["best", "smim"]
    with pytest.raises(UserError, match="given twice"):
        run_labels([tmp_path / "best", a])
    # file stems: distinct even where two names map to one stem
    assert file_stems([{"name": n} for n in ("x/smim", "y/smim", "a.b", "a-b", "a-b-2")]) == \
        ["x-smim", "y-smim", "a-b", "a-b-2", "a-b-2-2"]


def test_report_of_two_runs_with_one_folder_name_keeps_both(tiny_run, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tiny_run.parent / "data"))
    twin = tmp_path / "other" / tiny_run.name
    shutil.copytree(tiny_run, twin)
    out = tmp_path / "rep"
    assert main(["report", str(tiny_run), str(twin), "--out", str(out), "--max-sentences", "20", "--iwae-k", "2",
                 "--agg-prior-m", "0", "--repeats", "1", "--fig3-n", "4", "--fig5-trials", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in res["runs"]]
    assert len(set(names)) == 2 and names[1] == f"other/{tiny_run.name}", names
    figs = sorted(p.name for p in out.glob("*-fig5.png"))
    assert len(figs) == 2, figs
    page = (out / "report.md").read_text()
    assert all(f"({f})" in page for f in figs)
