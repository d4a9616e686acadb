"""`smim qa` smoke runs on a tiny model directory and tiny files."""

import json
import pickle

import torch

from sentencemim.cli import main
from sentencemim.config import ModelConfig
from sentencemim.model import SentenceAE
from sentencemim.modelio import save_pretrained
from sentencemim.vocab import Vocab

WORDS = "who wrote hamlet ? shakespeare did nobody knows the cat sat".split()


def _model_dir(tmp_path):
    torch.manual_seed(0)
    vocab = Vocab(WORDS)
    model = SentenceAE(ModelConfig(vocab_size=len(vocab), embedding_dim=8, hidden_dim=8, latent_dim=3))
    return save_pretrained(model, vocab, tmp_path / "model")


def test_rank_prints_and_saves_metrics(tmp_path, capsys):
    d = _model_dir(tmp_path)
    data = tmp_path / "qa.tsv"
    data.write_text("who wrote hamlet ?\tshakespeare did\t1\nwho wrote hamlet ?\tnobody knows\t0\n"
                    "who wrote hamlet ?\tthe cat sat\t0\n")
    assert main(["qa", "rank", str(d), "--data", str(data), "--runs", "3", "--variant", "all"]) == 0
    out = capsys.readouterr().out
    assert "[sample]" in out and "[mean]" in out and "[ae]" in out and "idf word overlap" in out
    report = json.loads((d / "qa-qa-test.json").read_text())
    assert report["results"]["sample"]["runs"] == 3 and report["results"]["ae"]["runs"] == 1
    assert report["results"]["sample"]["questions"] == 1 and report["filter"] == "both"
    assert 0 <= report["results"]["sample"]["MAP"] <= 1


def test_answer_and_errors(tmp_path, capsys):
    d = _model_dir(tmp_path)
    assert main(["qa", "answer", str(d), "who wrote hamlet", "--length", "short", "--show-decoded"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(short, 5 <unk>)") and "decoded:" in out and "<unk>" not in out.split("decoded:")[1]
    bad = tmp_path / "bad.tsv"
    bad.write_text("q\ta\t1\nq\ta\n")
    assert main(["qa", "rank", str(d), "--data", str(bad)]) == 2
    assert f"{bad}:2: expected 3 tab-separated columns" in capsys.readouterr().err
    assert main(["qa", "rank", str(d), "--data", "yahoocqa", "--data-dir", str(tmp_path)]) == 2
    assert "convert-yahoocqa" in capsys.readouterr().err


def test_convert_yahoocqa_then_baselines(tmp_path, capsys):
    env = {s: {"who wrote hamlet ?": [["shakespeare wrote hamlet", 1], ["the cat sat", 0]]} for s in ("train", "dev", "test")}
    pkl = tmp_path / "env.pkl"
    pkl.write_bytes(pickle.dumps(env))
    assert main(["qa", "convert-yahoocqa", str(pkl), str(tmp_path / "yahoocqa")]) == 2
    assert "allow_pickle" in capsys.readouterr().err
    assert main(["qa", "convert-yahoocqa", str(pkl), str(tmp_path / "yahoocqa"), "--allow-pickle"]) == 0
    assert main(["qa", "baselines", "--data", "yahoocqa", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "word overlap           P@1 1.0000" in out and "random (expected)      P@1 0.5000" in out


def test_lowercase_and_a_vocabulary_without_question_mark(tmp_path, capsys):
    """A PTB-like model (lowercase words, no "?"): --lowercase maps cased QA text onto its
    vocabulary, and the missing separator is said, in the output and the JSON."""
    torch.manual_seed(0)
    vocab = Vocab([w for w in WORDS if w != "?"])
    model = SentenceAE(ModelConfig(vocab_size=len(vocab), embedding_dim=8, hidden_dim=8, latent_dim=3))
    d = save_pretrained(model, vocab, tmp_path / "ptb-like")
    data = tmp_path / "qa.tsv"
    data.write_text("Who wrote Hamlet\tShakespeare did\t1\nWho wrote Hamlet\tNobody knows\t0\n")
    assert main(["qa", "rank", str(d), "--data", str(data), "--runs", "2", "--no-baselines"]) == 0
    err = capsys.readouterr().err
    assert "out-of-vocabulary tokens (read as <unk>): 4 of 7 (57.1%)" in err and 'has no "?"' in err
    assert main(["qa", "rank", str(d), "--data", str(data), "--runs", "2", "--no-baselines", "--lowercase",
                 "--json", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "lowercased" in err and "out-of-vocabulary tokens (read as <unk>): 0 of 7 (0.0%)" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["text"] == "lowercased" and report["separator_in_vocabulary"] is False and report["oov_tokens"] == 0
    assert "Q <unk> A" in report["note"]
    assert main(["qa", "answer", str(d), "Who wrote Hamlet", "--length", "short", "--lowercase"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("(short, 5 <unk>)") and "0 of 3 (0.0%)" in cap.err
    # --ptb-text: numbers as N and punctuation dropped too
    data.write_text("Who wrote Hamlet , in 1600 ?\tShakespeare did .\t1\nWho wrote Hamlet , in 1600 ?\tNobody knows\t0\n")
    assert main(["qa", "rank", str(d), "--data", str(data), "--runs", "2", "--no-baselines", "--ptb-text",
                 "--json", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    assert "PTB-style" in err and "out-of-vocabulary tokens (read as <unk>): 2 of 9 (22.2%)" in err  # in, N
