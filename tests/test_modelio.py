"""Model files: the Hugging Face style directory (config.json + model.safetensors +
vocab.json), training checkpoints, export between them, and nothing unpickled."""

import json
import pickle

import pytest
import torch

from sentencemim import checkpoint
from sentencemim.config import TrainConfig, to_dict
from sentencemim.data import collate
from sentencemim.decoding import decode
from sentencemim.errors import UserError
from sentencemim.modelio import export, load_model, save_pretrained
from sentencemim.vocab import Vocab

from conftest import TINY_SENTENCES


def outputs(model, vocab):
    """Everything a loaded model is used for: posterior, logits, greedy and seeded sampled decoding."""
    seqs = [torch.tensor(vocab.encode(s)).numpy() for s in TINY_SENTENCES]
    b = collate(seqs, list(range(len(seqs))))
    with torch.no_grad():
        mu, logvar = model.encode(b.enc_in, b.lengths)
        logits, _ = model.logits(b.dec_in, mu)
    greedy = decode(model, mu, max_len=10)
    sampled = decode(model, mu, max_len=10, method="sample", generator=torch.Generator().manual_seed(3))
    return mu, logvar, logits, greedy, sampled


def assert_same_outputs(a, b):
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)
    assert a[3:] == b[3:]


def fake_run(folder, model, vocab, step=7):
    """A run directory as train.py writes it (only the keys load_model reads)."""
    folder.mkdir()
    checkpoint.save({"model": model.state_dict(), "model_config": to_dict(model.cfg),
                     "train_config": to_dict(TrainConfig(corpus="synthetic")), "state": {"step": step}},
                    folder / "checkpoint-best.pt")
    vocab.save(folder / "vocab.json")
    return folder


@pytest.fixture
def trained_like(tiny_model):
    """Random weights far from the initialisation, so a forgotten tensor would show."""
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p))
    return tiny_model.eval()


def test_save_load_round_trip_gives_identical_outputs(trained_like, tiny_vocab, tmp_path):
    d = save_pretrained(trained_like, tiny_vocab, tmp_path / "m", extra={"train": {"objective": "mim"}})
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    model, vocab, info = load_model(d)
    assert vocab.itos == tiny_vocab.itos
    assert info == {"train": {"objective": "mim"}}
    assert model.cfg == trained_like.cfg
    for k, v in trained_like.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert_same_outputs(outputs(model, vocab), outputs(trained_like, tiny_vocab))


def test_model_directory_is_plain_json_and_safetensors(trained_like, tiny_vocab, tmp_path):
    from safetensors import safe_open
    d = save_pretrained(trained_like, tiny_vocab, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "sentencemim-model-1"
    assert cfg["model"]["latent_dim"] == 3 and cfg["model"]["vocab_size"] == len(tiny_vocab)
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(trained_like.state_dict())
    assert json.loads((d / "vocab.json").read_text())["itos"][:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]


def test_loading_a_model_directory_unpickles_nothing(trained_like, tiny_vocab, tmp_path, monkeypatch):
    d = save_pretrained(trained_like, tiny_vocab, tmp_path / "m")

    def forbidden(*a, **k):
        raise AssertionError("pickle / torch.load used to load a model directory")
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    model, _, _ = load_model(d)
    assert torch.equal(model.to_mu.weight, trained_like.to_mu.weight)


def test_checkpoints_load_weights_only(trained_like, tiny_vocab, tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run", trained_like, tiny_vocab)
    real_load = torch.load
    calls = []

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real_load(*a, **k)
    monkeypatch.setattr(torch, "load", spy)
    load_model(run)
    assert calls == [True]


def test_run_dir_checkpoint_file_and_export_agree(trained_like, tiny_vocab, tmp_path):
    run = fake_run(tmp_path / "run", trained_like, tiny_vocab, step=7)
    ref = outputs(trained_like, tiny_vocab)
    m_run, v_run, info = load_model(run)
    assert info["step"] == 7 and info["train"]["corpus"] == "synthetic"
    assert_same_outputs(outputs(m_run, v_run), ref)
    m_file, v_file, _ = load_model(run / "checkpoint-best.pt")
    assert_same_outputs(outputs(m_file, v_file), ref)

    out = export(run, tmp_path / "exported")
    m_exp, v_exp, info_exp = load_model(out)
    assert_same_outputs(outputs(m_exp, v_exp), ref)
    # the training config travels along: `smim evaluate` finds the corpus from it
    assert info_exp["train"]["corpus"] == "synthetic" and info_exp["step"] == 7
    assert info_exp["exported_from"].endswith("checkpoint-best.pt")


def test_export_refuses_to_overwrite_or_write_into_a_run(trained_like, tiny_vocab, tmp_path):
    run = fake_run(tmp_path / "run", trained_like, tiny_vocab)
    out = export(run, tmp_path / "exported")
    with pytest.raises(UserError, match="already holds a model"):
        export(run, out)
    export(run, out, overwrite=True)
    with pytest.raises(UserError, match="training run directory"):
        export(run, run)


def test_corrupt_or_mismatched_files_are_user_errors(trained_like, tiny_vocab, tmp_path):
    d = save_pretrained(trained_like, tiny_vocab, tmp_path / "m")
    with pytest.raises(UserError, match="no such model"):
        load_model(tmp_path / "missing")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable"):
        load_model(d)
    d2 = save_pretrained(trained_like, tiny_vocab, tmp_path / "m2")
    Vocab(tiny_vocab.itos[4:] + ["extra"]).save(d2 / "vocab.json")
    with pytest.raises(UserError, match="do not belong together"):
        load_model(d2)
    with pytest.raises(UserError, match="neither a model directory"):
        load_model(tmp_path)
