"""Shared fixtures. Tests that need the real corpora look for them in
$SENTENCEMIM_TEST_DATA, else ../shared/data beside the checkout, and skip with a
stated reason when they are absent (a fresh clone elsewhere)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sentencemim.config import ModelConfig
from sentencemim.data import Dataset, collate
from sentencemim.model import SentenceAE
from sentencemim.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SENTENCEMIM_TEST_DATA", ROOT.parent / "shared" / "data"))


def shared_corpus(name: str) -> Path:
    """The real-corpora data dir, or skip the test with the reason."""
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"real corpus {name!r} not found under {SHARED_DATA} (set SENTENCEMIM_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """No test writes to the user's cache; every test starts from the same seed."""
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tmp_path / "data"))
    torch.manual_seed(0)
    np.random.seed(0)


def _one_pixel_png() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


ONE_PIXEL_PNG = _one_pixel_png()


@pytest.fixture(autouse=True)
def _figures_built_not_rendered(request, monkeypatch):
    """Pages with figures are written many times over in the driver and report tests, and
    matplotlib's layout and rasterisation were about half of their time. Every figure is
    still built (data, artists, labels) and a PNG file is still written, but as one pixel,
    unless the test is marked `real_figures` (test_report, test_curves: those render every
    kind of figure the project draws, so an error that only rendering shows still fails)."""
    if request.node.get_closest_marker("real_figures"):
        return
    try:
        import matplotlib.figure
    except ImportError:
        return

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(ONE_PIXEL_PNG)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda self, *a, **k: None)


TINY_SENTENCES = [
    "the cat sat on the mat".split(),
    "a dog ran".split(),
    "the dog sat".split(),
    "cats and dogs".split(),
    "the mat was red and the cat was black".split(),
    "a bird".split(),
]


@pytest.fixture
def tiny_vocab():
    return Vocab.build(TINY_SENTENCES)


@pytest.fixture
def tiny_dataset(tiny_vocab):
    return Dataset([np.asarray(tiny_vocab.encode(s)) for s in TINY_SENTENCES])


@pytest.fixture
def tiny_model(tiny_vocab):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(tiny_vocab), embedding_dim=8, hidden_dim=8, latent_dim=3)
    return SentenceAE(cfg)


def write_corpus(folder: Path, sentences=None, sizes=(60, 10, 10)):
    """A small corpus folder of train/valid/test.txt made from a fixed word list."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on mat red black bird and was".split()
    for split, n in zip(("train", "valid", "test"), sizes):
        lines = sentences or [" ".join(rng.choice(words, rng.integers(1, 9))) for _ in range(n)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def overfit():
    """sMIM (A-MIM loss) trained on the six tiny sentences until it reconstructs them (~2 s),
    once per session (test_api, test_serve, test_browser). Tests must not change it.

    logvar_floor -4 (std >= 0.14), not the default -10: with six sentences the A-MIM
    latent terms (-1/2 (log q + log N(z; 0, I))) gain more from collapsing every mean
    to ~0 with the std at the floor than the reconstruction loses by forgetting which
    sentence it was (log 6 = 1.8 nats); from this seed, training with the default
    floor ends in exactly that state (reconstruction 1.80 nats, means spread 1e-5)."""
    torch.manual_seed(0)
    vocab = Vocab.build(TINY_SENTENCES)
    model = SentenceAE(ModelConfig(vocab_size=len(vocab), embedding_dim=16, hidden_dim=32, latent_dim=8,
                                   embedding_dropout=0.0, logvar_floor=-4.0))
    seqs = [np.asarray(vocab.encode(s)) for s in TINY_SENTENCES]
    batch = collate(seqs, list(range(len(seqs))))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        model(batch, "mim").loss.backward()
        opt.step()
    return model.eval(), vocab


@pytest.fixture
def stop_at_stage(monkeypatch):
    """stop_at_stage(NAME): every eval.stages.Stages raises KeyboardInterrupt (as Ctrl-C would)
    when an evaluation reaches stage NAME; stop_at_stage(None) undoes it."""
    from sentencemim.eval.stages import Stages
    real = Stages.run

    def stop_at(stage):
        def run(self, name, fn):
            if name == stage:
                raise KeyboardInterrupt
            return real(self, name, fn)
        monkeypatch.setattr(Stages, "run", real if stage is None else run)
    return stop_at
