import hashlib
import io
import subprocess
import zipfile

import pytest

from sentencemim import corpora
from sentencemim.corpora import CorpusSpec, Source, git_blob_sha1, resolve
from sentencemim.errors import UserError

from conftest import write_corpus


def _serve(tmp_path, name, data: bytes) -> str:
    p = tmp_path / "remote" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p.as_uri()


def test_git_blob_sha1_matches_git(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b" a line \n another \n")
    expected = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True).stdout.strip()
    assert git_blob_sha1(p.read_bytes()) == expected


def test_download_verifies_and_places_files(tmp_path, monkeypatch):
    texts = {s: f" {s} sentence one \n {s} two \n".encode() for s in corpora.SPLITS}
    srcs = {s: Source(_serve(tmp_path, f"{s}.txt", t), sha256=hashlib.sha256(t).hexdigest())
            for s, t in texts.items()}
    srcs["test"] = Source(srcs["test"].url, git_blob=git_blob_sha1(texts["test"]))
    monkeypatch.setitem(corpora.CORPORA, "toy", CorpusSpec("toy", "toyfolder", srcs))
    rc = resolve("toy", str(tmp_path / "data"))
    for s in corpora.SPLITS:
        assert rc.files[s][0] == tmp_path / "data" / "toyfolder" / f"{s}.txt"
        assert rc.files[s][0].read_bytes() == texts[s]
    # second resolve: files present, nothing fetched (the remote is gone)
    for f in (tmp_path / "remote").iterdir():
        f.unlink()
    assert resolve("toy", str(tmp_path / "data")).files["train"][0].is_file()


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    url = _serve(tmp_path, "train.txt", b"tampered\n")
    spec = CorpusSpec("toy", "toy", {s: Source(url, sha256="0" * 64) for s in corpora.SPLITS})
    monkeypatch.setitem(corpora.CORPORA, "toy", spec)
    with pytest.raises(UserError, match="checksum mismatch"):
        resolve("toy", str(tmp_path / "data"))
    assert not (tmp_path / "data" / "toy" / "train.txt").exists()


def test_offline_error_names_expected_files(tmp_path, monkeypatch):
    spec = CorpusSpec("toy", "toy", {s: Source((tmp_path / "nowhere" / f"{s}.txt").as_uri(), sha256="0" * 64)
                                     for s in corpora.SPLITS})
    monkeypatch.setitem(corpora.CORPORA, "toy", spec)
    with pytest.raises(UserError) as e:
        resolve("toy", str(tmp_path / "data"))
    msg = str(e.value)
    assert "train.txt" in msg and "test.txt" in msg and "--data-dir" in msg


def test_zip_member_and_wikitext103_sample(tmp_path, monkeypatch):
    lines = [f" line {i} here " for i in range(30)] + [" = Header = ", " "]
    raw = ("\n".join(lines) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("wikitext-103/wiki.train.tokens", raw)
    url = _serve(tmp_path, "wt.zip", buf.getvalue())
    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    spec = CorpusSpec("wikitext-103", "wt", {"train": Source(url, md5=md5, member="wikitext-103/wiki.train.tokens")})
    monkeypatch.setitem(corpora.CORPORA, "wikitext-103", spec)
    monkeypatch.setattr(corpora, "WT103_SAMPLE_LINES", 10)
    monkeypatch.setattr(corpora.sample_lines, "__defaults__", (10, 0))
    corpora.fetch(spec, tmp_path / "wt", ["train"])
    got = (tmp_path / "wt" / "train.txt").read_text().splitlines()
    assert len(got) == 10 and all(l.startswith(" line") for l in got)
    nums = [int(l.split()[1]) for l in got]
    assert nums == sorted(nums)  # original order kept


def test_folder_corpus_and_errors(tmp_path):
    folder = write_corpus(tmp_path / "mine")
    rc = resolve(str(folder))
    assert rc.files["valid"] == [folder / "valid.txt"]
    (folder / "test.txt").unlink()
    with pytest.raises(UserError, match="lacks test.txt"):
        resolve(str(folder))
    with pytest.raises(UserError, match="unknown corpus 'nope'"):
        resolve("nope")


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTENCEMIM_DATA", str(tmp_path / "env"))
    assert corpora.data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert corpora.data_dir() == tmp_path / "env"
    monkeypatch.delenv("SENTENCEMIM_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert corpora.data_dir() == tmp_path / "cache" / "sentencemim"


def test_synthetic_corpus_is_deterministic_and_exact(tmp_path):
    from sentencemim.synthetic import HMM, true_nll
    rc = resolve("synthetic", str(tmp_path / "d"))
    text = rc.files["test"][0].read_text()
    rc2 = resolve("synthetic", str(tmp_path / "d2"))
    assert rc2.files["test"][0].read_text() == text
    # probabilities of all sentences up to length 3 from a 2-word slice are consistent:
    # sum over every sentence of length 1 equals P(length 1)
    hmm = HMM()
    p1 = sum(pytest.importorskip("numpy").exp(hmm.log_prob([w])) for w in hmm.words)
    assert p1 == pytest.approx(float((hmm.start * hmm.stop).sum()), rel=1e-9)
    assert (true_nll([s.split() for s in text.splitlines()[:50]]) > 0).all()
