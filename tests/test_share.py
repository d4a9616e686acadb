"""Models you can share: the model card `smim export` writes, and the Hugging Face Hub
round trip (from_pretrained of a repo id, offline, against a cache this test builds;
save_pretrained / push_to_hub through huggingface_hub's API)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sentencemim import SentenceMIM
from sentencemim.cli import build_parser, main
from sentencemim.cliargs import explicit as _explicit
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.errors import UserError
from sentencemim.hub import MODEL_FILES
from sentencemim.modelcard import equivalent_command, model_card
from sentencemim.train import train

from conftest import ROOT, write_corpus


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run with its test evaluation (eval-test.json)."""
    folder = tmp_path_factory.mktemp("share")
    corpus = write_corpus(folder / "corpus")
    run = folder / "run"
    train(ModelConfig(embedding_dim=8, hidden_dim=8, latent_dim=3),
          TrainConfig(corpus=str(corpus), batch_size=8, max_steps=10, seed=2, objective="vae",
                      kl_annealing="linear", kl_anneal_steps=50), run, quiet=True)
    assert main(["evaluate", str(run), "--json", str(run / "eval-test.json"), "--iwae-k", "3", "--repeats", "2",
                 "--agg-prior-m", "5"]) == 0
    return run


def test_export_writes_a_model_card_with_every_item(run, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "README.md (model card)" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentencemim\n")
    assert "sVAE: the negative ELBO" in card and "| embedding / hidden / latent size | 8 / 8 / 3 |" in card
    from safetensors.numpy import load_file
    n_params = sum(v.size for v in load_file(str(out / "model.safetensors")).values())
    assert f"| parameters | {n_params:,} |" in card
    cfg = json.loads((run / "config.json").read_text())
    for split in ("train", "valid", "test"):  # the corpus files, hashed independently here
        path = os.path.join(cfg["train"]["corpus"], f"{split}.txt")
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert f"| {split} | `{split}.txt` | `{digest}` |" in card
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert f"- command: `{start['command']}` at code commit `{start['commit']}`" in card
    assert "- steps: 10, epoch 1 (batch size 8)" in card
    assert "KL annealing: linear (50 steps)" in card
    rep = json.loads((run / "eval-test.json").read_text())
    for key in ("melbo", "elbo", "iwae", "iwae_train_prior"):
        b = rep[key]
        assert f"| {b['bound']} | {b['prior']} | {b['samples']} | {b['nll_per_sentence']:.3f} |" in card
    assert "**not** a held-out likelihood" in card
    assert f"{rep['reconstruction']['ppl_paper']:.3f} [paper convention]" in card
    assert "`ppl_words_eos` = exp(sum NLL / (words + &lt;eos>))" in card  # '<' escaped outside code spans
    assert f"sentence BLEU-1 (the paper's, averaged) {rep['bleu_modes'][0]['sentence_bleu1']:.4f}" in card


def test_card_reads_the_reproduce_evaluation_of_the_exported_step(run, tmp_path):
    """Without eval-test.json the card takes `smim reproduce`'s analysis.json, with the
    tightest held-out bounds, but only when it evaluates the exported step."""
    r = tmp_path / "run"
    shutil.copytree(run, r)
    rep = json.loads((r / "eval-test.json").read_text())
    (r / "eval-test.json").unlink()
    assert "heldout" in rep and "method" in rep["heldout"]
    rep.pop("split"), rep.pop("corpus")  # analysis.json keeps them beside its report
    (r / "analysis.json").write_text(json.dumps({"step": 10, "checkpoint": "best", "report": rep,  # 10: the fixture's steps
                                                 "settings": {"split": "test"}, "corpus": "toy", "commit": "abc1234",
                                                 "evaluated": "2026-12-01 16:27:12 UTC"}))
    out = tmp_path / "model"
    assert main(["export", str(r), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert ("From `analysis.json` (`smim reproduce`'s evaluation of checkpoint-best, at code commit `abc1234`, "
            "2026-12-01 16:27:12 UTC): split **test** of toy,") in card
    h = rep["heldout"]
    assert (f"| tightest held-out bound: `{h['method']}` (ESS mean {h['ess_mean']:.1f} of {h['k']}) | {h['prior']} | "
            f"{h['samples']} | {h['nll_per_sentence']:.3f} |") in card
    # AIS on a subset (ais_sentences) is said beside the bound it was run with
    rep["heldout"]["ais_subset"] = {"sentences": 3, "of": 8, "methods": {
        h["method"]: {"nll_per_sentence": 101.25}, "ais": {"nll_per_sentence": 99.5, "steps": 100, "k": 8,
                                                           "convergence": {"20": 120.0, "100": 99.5}, "ess_mean": 1.5}}}
    (r / "analysis.json").write_text(json.dumps({"step": 10, "checkpoint": "best", "report": rep}))
    card = model_card(out, run_dir=r)
    assert (f"AIS (`ais`, prior {h['prior']}) on a fixed random 3 of those 8 sentences, 8 chains: T=20: 120.000, "
            f"T=100: 99.500 (ESS mean 1.5); the tightest bound's method `{h['method']}` on the same sentences: "
            "101.250.") in card
    (r / "analysis.json").write_text(json.dumps({"step": 3, "checkpoint": "best", "report": rep}))
    card = model_card(out, run_dir=r)
    assert "evaluates step 3, not the exported step 10: not used" in card and "No test evaluation" in card


def test_card_says_how_training_ended(run, tmp_path):
    """Where and why the run's last session stopped, and its lr decays, even when the exported
    checkpoint is an earlier, best one; an earlier session's end (before a resume) does not
    count; a run still training or interrupted says so."""
    out = tmp_path / "model"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "- training ended at step 10 (epoch 1): its step or epoch budget was reached" in \
        (out / "README.md").read_text()
    r = tmp_path / "run"
    shutil.copytree(run, r)

    def append(*events):
        with open(r / "metrics.jsonl", "a") as f:
            f.write("".join(json.dumps(e) + "\n" for e in events))
    # resumed after its budget's end (step 10): that end no longer describes the run
    append({"kind": "event", "event": "resume", "step": 10}, {"kind": "valid", "step": 14, "epoch": 2},
           {"kind": "event", "event": "lr_decay", "step": 14, "lr": 2.5e-4},
           {"kind": "event", "event": "lr_decay", "step": 21, "lr": 6.25e-5})
    card = model_card(out, run_dir=r)
    assert "- training had not ended when this card was written (last recorded step 21; still running" in card
    assert "training ended at step 10" not in card
    assert "- learning-rate decays: to 0.00025 at step 14 (epoch 2), to 6.25e-05 at step 21" in card
    append({"kind": "event", "event": "interrupted", "signal": "SIGINT", "step": 22})
    assert "- training was interrupted (SIGINT) at step 22 and had not ended" in model_card(out, run_dir=r)
    append({"kind": "event", "event": "resume", "step": 22},
           {"kind": "event", "event": "stop", "reason": "lr below min_lr", "step": 30},
           {"kind": "event", "event": "end", "step": 30})
    assert "- training ended at step 30: lr below min_lr" in model_card(out, run_dir=r)
    # an evaluation started and not finished: its kept stages, no analysis.json yet
    (r / "eval-test.json").unlink()
    (r / "analysis-stages").mkdir()
    (r / "analysis-stages" / "key.json").write_text(json.dumps({"step": 3, "settings": {"split": "test"}}))
    for stage in ("melbo_repeat_0", "iwae"):
        (r / "analysis-stages" / f"{stage}.json").write_text("{}")
    assert "No test evaluation was found" in model_card(out, run_dir=r)  # of another step: not this one's
    (r / "analysis-stages" / "key.json").write_text(json.dumps({"step": 10, "settings": {"split": "test"}}))
    assert ("An evaluation of this step on the test split (`smim reproduce`) was started and had not finished when "
            "this card was written (2 stage(s) kept: still running, or stopped and resumable)") in model_card(out, run_dir=r)


def test_card_without_evaluation_command_or_corpus(run, tmp_path):
    out = tmp_path / "bare"
    SentenceMIM.from_pretrained(run).save_pretrained(out)  # a card is written when there is none
    (out / "README.md").unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg["train"]["corpus"] = str(tmp_path / "gone")
    cfg.pop("exported_from")
    (out / "config.json").write_text(json.dumps(cfg))
    card = model_card(out)
    assert "No test evaluation was found" in card
    assert "so no sha256 is given" in card
    assert "not recorded by the run; an equivalent command rebuilt from config.json" in card
    with pytest.raises(UserError, match="no such evaluation report"):
        model_card(out, eval_json=tmp_path / "none.json")


def test_equivalent_command_parses_back_to_the_same_configs():
    mc = ModelConfig(latent_dim=32, word_dropout=0.25, vocab_size=99)
    tc = TrainConfig(corpus="ptb", objective="vae", kl_annealing="logistic", lr=5e-4, tensorboard=True,
                     device="cuda", data_dir="/data")
    cmd = equivalent_command(vars(mc), vars(tc))
    assert "--device" not in cmd and "--data-dir" not in cmd and "--vocab-size" not in cmd
    args = build_parser().parse_args(cmd.split()[1:])
    assert args.out == "RUN"
    model_flags = _explicit(args, ModelConfig)
    train_flags = _explicit(args, TrainConfig)
    assert ModelConfig(**model_flags, vocab_size=99) == mc
    assert TrainConfig(**train_flags, device="cuda", data_dir="/data") == tc


# ---------------------------------------------------------------------- the Hub
REPO, COMMIT = "sentencemim-test/tiny", "0123456789abcdef0123456789abcdef01234567"


def build_hub_cache(model_dir, cache):
    """The layout huggingface_hub writes: blobs/<sha256>, snapshots/<commit>/<file> -> blob
    (relative symlinks), refs/main holding the commit."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for f in sorted(model_dir.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / digest)
        (snap / f.name).symlink_to(os.path.join("..", "..", "blobs", digest))
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def test_from_pretrained_resolves_a_repo_id_from_an_offline_hub_cache(run, tmp_path):
    pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")
    model_dir = SentenceMIM.from_pretrained(run).save_pretrained(tmp_path / "model")
    snap = build_hub_cache(model_dir, tmp_path / "hub")
    script = textwrap.dedent(f"""
        import json, huggingface_hub
        from sentencemim import SentenceMIM
        from sentencemim.errors import UserError
        out = {{}}
        info = huggingface_hub.scan_cache_dir()  # the library's own view of the cache
        repo = [r for r in info.repos if r.repo_id == "{REPO}"][0]
        out["revisions"] = [(r.commit_hash, sorted(r.refs), sorted(f.file_name for f in r.files)) for r in repo.revisions]
        out["snapshot"] = huggingface_hub.snapshot_download("{REPO}")
        m = SentenceMIM.from_pretrained("{REPO}")
        out["mean"] = m.encode(["the cat sat"])[0].tolist()
        out["pinned"] = SentenceMIM.from_pretrained("{REPO}", revision="{COMMIT}").encode(["the cat sat"])[0].tolist()
        try:
            SentenceMIM.from_pretrained("sentencemim-test/absent")
        except UserError as e:
            out["absent"] = str(e)
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["revisions"] == [[COMMIT, ["main"], ["README.md", "config.json", "model.safetensors", "vocab.json"]]]
    assert os.path.realpath(out["snapshot"]) == os.path.realpath(snap)
    expected = SentenceMIM.from_pretrained(model_dir).encode(["the cat sat"])[0]
    np.testing.assert_array_equal(np.asarray(out["mean"], dtype=np.float32), expected)
    np.testing.assert_array_equal(np.asarray(out["pinned"], dtype=np.float32), expected)
    assert out["absent"] == ("sentencemim-test/absent: no such model directory or checkpoint here; read as a "
                             "Hugging Face Hub repo id, it is not in the local Hub cache and the Hub could not "
                             "be reached (offline?)")
    assert "\n" not in out["absent"]


def test_repo_id_without_the_hub_extra_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"pip install 'sentencemim\[hub\]'"):
        SentenceMIM.from_pretrained("someone/some-model")
    with pytest.raises(UserError, match="no such model directory"):  # a path-like name never goes to the Hub
        SentenceMIM.from_pretrained("./someone/some-model")
    with pytest.raises(UserError, match="revision"):
        SentenceMIM.from_pretrained(tmp_path, revision="main")


def test_push_to_hub_follows_huggingface_hub(run, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")
    calls, cards = [], []

    class FakeApi:  # records what would go to the Hub (no network here)
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw, self.token))

        def upload_folder(self, **kw):
            files = sorted(os.listdir(kw["folder_path"]))  # the folder exists while uploading
            cards.append(open(os.path.join(kw["folder_path"], "README.md")).read())
            calls.append(("upload_folder", kw.pop("repo_id"), {**kw, "folder_path": None, "files": files}, self.token))
            return "commit-info"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    m = SentenceMIM.from_pretrained(run)
    m.save_pretrained(tmp_path / "tiny-smim", push_to_hub=True, private=True, token="t0k")
    files = ["README.md", "config.json", "model.safetensors", "vocab.json"]
    assert calls == [
        ("create_repo", "tiny-smim", {"private": True, "exist_ok": True, "repo_type": "model"}, "t0k"),
        ("upload_folder", "tiny-smim", {"folder_path": None, "commit_message": "Upload sentencemim model",
                                        "revision": None, "create_pr": None,
                                        "allow_patterns": MODEL_FILES, "repo_type": "model", "files": files}, "t0k")]
    calls.clear()
    assert m.push_to_hub("org/tiny", commit_message="v1", branch="dev") == "commit-info"
    assert calls[1][1] == "org/tiny" and calls[1][2]["commit_message"] == "v1" and calls[1][2]["revision"] == "dev"
    assert calls[1][2]["files"] == files
    assert 'SentenceMIM.from_pretrained("org/tiny")' in cards[-1]  # the card shows how to load the repo


def test_hub_failures_are_named_by_their_kind():
    from sentencemim.hub import _hub_failure

    def err(kind, text):
        return type(kind, (Exception,), {})(text)

    assert _hub_failure(err("RevisionNotFoundError", "404 Client Error. Revision Not Found")) == \
        "it has no such revision"
    assert _hub_failure(err("RepositoryNotFoundError", "404 Client Error.")).startswith("no repo by that name")
    assert "offline?" in _hub_failure(err("LocalEntryNotFoundError", "Cannot find the requested files"))
    assert "(404)" in _hub_failure(err("HTTPError", "404 Client Error: Not Found"))
    long = _hub_failure(err("ValueError", "x" * 500 + "\nsecond line"))
    assert "\n" not in long and len(long) < 220
