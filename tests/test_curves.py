"""smim curves / sentencemim.curves: validation curves of several runs from metrics.jsonl."""

import json

import pytest

from sentencemim.cli import main
from sentencemim.curves import plot_curves, read_run
from sentencemim.errors import UserError

pytestmark = pytest.mark.real_figures  # every kind of figure the project draws is rendered here


def fake_run(folder, objective, latent, valid, decays=(), train_sentences=100, batch_size=10, torn=False):
    """A run directory as train.py writes it: config.json and metrics.jsonl."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": {"latent_dim": latent},
                                                    "train": {"objective": objective, "batch_size": batch_size}}))
    recs = [{"kind": "event", "event": "start", "step": 0, "train_sentences": train_sentences}]
    for step, epoch, loss, lr in valid:
        recs.append({"kind": "train", "step": step, "loss": 99.0})
        recs.append({"kind": "valid", "step": step, "epoch": epoch, "loss": loss, "rec_per_sentence": loss - 1,
                     "lr": lr})
        if step in decays:
            recs.append({"kind": "event", "event": "lr_decay", "step": step, "lr": lr})
    text = "".join(json.dumps(r) + "\n" for r in recs)
    (folder / "metrics.jsonl").write_text(text + ('{"kind": "val' if torn else ""))
    return folder


def test_read_run_takes_valid_records_decays_and_epoch_length(tmp_path):
    run = fake_run(tmp_path / "a", "mim", 16, [(0, 0, 9.0, 1e-3), (7, 0, 8.0, 1e-3), (12, 1, 7.5, 1e-3),
                                               (24, 2, 7.6, 2.5e-4)], decays=(24,))
    r = read_run(run)
    assert r.label == "a (mim, d=16)"
    assert [v["step"] for v in r.valid] == [0, 7, 12, 24] and r.decays == [24]
    assert r.steps_per_epoch == 12 and not r.epoch_estimated  # the first end-of-epoch validation
    early = read_run(fake_run(tmp_path / "b", "vae", 8, [(0, 0, 9.0, 1e-3), (5, 0, 8.0, 1e-3)], torn=False))
    assert early.steps_per_epoch == 10 and early.epoch_estimated  # 100 sentences / batch 10


def test_plot_curves_writes_a_png_and_the_cli_says_so(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    a = fake_run(tmp_path / "a", "mim", 16, [(0, 0, 9.0, 1e-3), (12, 1, 7.5, 1e-3), (24, 2, 7.6, 2.5e-4)],
                 decays=(24,))
    b = fake_run(tmp_path / "b", "ae", 16, [(0, 0, 9.5, 1e-3), (12, 1, 6.0, 1e-3)])
    out = plot_curves([a, b], tmp_path / "c.png", x="epoch", labels=["sMIM", "AE"], title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["curves", str(a), str(b), "--out", str(tmp_path / "d.png"), "--metrics", "loss,lr,kl_per_sentence"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'd.png'}"
    assert (tmp_path / "d.png").stat().st_size > 1000


@pytest.mark.parametrize("args,words", [
    (["{run}", "--metrics", "loss,perplexity"], "unknown metric(s) perplexity"),
    (["{run}", "--metrics", ","], "unknown metric(s) (none given)"),
    (["{tmp}/missing"], "no metrics.jsonl"),
    (["{run}", "--label", "one", "--label", "two"], "2 labels for 1 runs"),
    (["{run}", "--out", "{tmp}/no/such/dir/x.png"], "output folder does not exist"),
    (["{torn}"], "{torn}/metrics.jsonl:3: not a JSON record"),
    (["{empty}"], "no validation records"),
])
def test_mistakes_are_one_line_errors(tmp_path, capsys, args, words):
    run = fake_run(tmp_path / "run", "mim", 4, [(0, 0, 1.0, 1e-3)])
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "metrics.jsonl").write_text('{"kind": "event"}\n\n{"kind": "val\n{"kind": "valid"}\n')
    empty = fake_run(tmp_path / "empty", "mim", 4, [])
    fmt = dict(run=run, tmp=tmp_path, torn=torn, empty=empty)
    argv = ["curves"] + [a.format(**fmt) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smim curves: error:") and "\n" not in err and words.format(**fmt) in err


def test_epoch_axis_needs_an_epoch_length(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "step": 3, "epoch": 0, "loss": 1.0}) + "\n")
    with pytest.raises(UserError, match="--x step"):
        plot_curves([run], tmp_path / "x.png", x="epoch")
