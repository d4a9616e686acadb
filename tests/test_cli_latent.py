"""CLI smoke tests for export / reconstruct / sample / interpolate / encode /
neighbors, on a real (tiny, 20-step) `smim train` run over the synthetic corpus."""

import numpy as np
import pytest

from sentencemim import SentenceMIM
from sentencemim.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_latent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SENTENCEMIM_DATA", str(root / "data"))
        rc = main(["train", "--corpus", "synthetic", "--embedding-dim", "16", "--hidden-dim", "16",
                   "--latent-dim", "4", "--max-steps", "20", "--eval-max-sentences", "50", "--quiet",
                   "--out", str(root / "run")])
    assert rc == 0
    lines = (root / "data" / "synthetic" / "test.txt").read_text().splitlines()[:30]
    (root / "index.txt").write_text("\n".join(lines) + "\n")
    return root


def smim(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def index_lines(run):
    return (run / "index.txt").read_text().splitlines()


def test_export_and_every_command_accepts_run_dir_model_dir_or_checkpoint(run, capsys):
    model_dir = run / "exported"
    rc, out, _ = smim(capsys, "export", run / "run", "--out", model_dir)
    assert rc == 0 and "model.safetensors" in out
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    s = index_lines(run)[0]
    for cmd in (["reconstruct", "{}", s], ["sample", "{}", "-n", 3, "--method", "sample"],
                ["interpolate", "{}", s, index_lines(run)[1], "--steps", 3]):
        outs = set()
        for model in (run / "run", model_dir, run / "run" / "checkpoint-best.pt"):
            rc, out, _ = smim(capsys, *[model if a == "{}" else a for a in cmd])
            assert rc == 0 and out.strip()
            outs.add(out)
        assert len(outs) == 1, cmd  # the same model, whichever way it was named
    rc, _, err = smim(capsys, "export", run / "run", "--out", model_dir)
    assert rc == 2 and "--force" in err


def test_reconstruct_prints_the_table_11_rows(run, capsys):
    a, b = index_lines(run)[:2]
    rc, out, err = smim(capsys, "reconstruct", run / "run", a, b + " zzzq", "--ae", run / "run")
    assert rc == 0
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    for block, sentence in zip(blocks, (a, b + " zzzq")):
        rows = block.splitlines()
        assert [r.split()[0] for r in rows] == ["(D)", "(M)", "(R)", "(P)", "(AE)"]
        assert rows[0].split(None, 1)[1] == sentence
        # the (AE) row decodes the mean code too; here it is the same model, so it equals (M)
        assert rows[4].split(None, 1)[1:] == rows[1].split(None, 1)[1:]
    # reported once for the sMIM model and once for the --ae model, not once per row
    assert err.count("out-of-vocabulary word(s) mapped to <unk>: zzzq") == 2
    assert "was trained with objective 'mim', not 'ae'" in err


def test_sample_is_seeded_and_validates_n(run, capsys):
    rc, out, _ = smim(capsys, "sample", run / "run", "-n", 4, "--method", "sample", "--std", 1.0)
    assert rc == 0 and len(out.splitlines()) == 4
    assert smim(capsys, "sample", run / "run", "-n", 4, "--method", "sample", "--std", 1.0)[1] == out
    assert smim(capsys, "sample", run / "run", "-n", 4, "--method", "sample", "--std", 1.0,
                "--seed", 1)[1] != out
    rc, out, err = smim(capsys, "sample", run / "run", "-n", 0)
    assert rc == 2 and out == "" and err.strip() == ("smim sample: error: argument -n: must be a positive integer, got 0 "
                                                  "(see smim sample --help)")


def test_interpolate_prints_equispaced_points(run, capsys):
    a, b = index_lines(run)[2:4]
    rc, out, _ = smim(capsys, "interpolate", run / "run", a, b, "--steps", 4, "--mean", "--method", "beam")
    assert rc == 0
    assert [r.split()[0] for r in out.splitlines()] == ["0.00", "0.33", "0.67", "1.00"]
    rc, _, err = smim(capsys, "interpolate", run / "run", a, "", "--steps", 4)
    assert rc == 2 and "empty sentence" in err


def test_encode_writes_the_codes_of_every_line(run, tmp_path, capsys):
    out_npy = tmp_path / "codes.npy"
    rc, _, err = smim(capsys, "encode", run / "run", "--input", run / "index.txt", "--output", out_npy,
                      "--std-output", tmp_path / "std.npy", "--chunk-size", 7, "--batch-size", 4)
    assert rc == 0 and "30 encoded" in err
    mean, std = SentenceMIM.from_pretrained(run / "run").encode(index_lines(run))
    np.testing.assert_allclose(np.load(out_npy), mean, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "std.npy"), std, rtol=1e-5)
    rc, _, err = smim(capsys, "encode", run / "run", "--input", tmp_path / "missing.txt", "--output", out_npy)
    assert rc == 2 and err.strip().endswith("missing.txt: file not found") and len(err.splitlines()) == 1


def test_neighbors_lists_the_query_itself_first(run, tmp_path, capsys):
    lines = index_lines(run)
    rc, out, _ = smim(capsys, "neighbors", run / "run", "--index", run / "index.txt", lines[5], "-k", 3, "--quiet")
    assert rc == 0
    rows = out.splitlines()
    assert rows[0] == f"query: {lines[5]}" and len(rows) == 4
    rank, dist, text = rows[1].split(None, 2)
    assert (rank, float(dist), text) == ("1", 0.0, lines[5])
    codes = tmp_path / "codes.npy"
    assert smim(capsys, "encode", run / "run", "--input", run / "index.txt", "--output", codes, "--quiet")[0] == 0
    rc, out2, _ = smim(capsys, "neighbors", run / "run", "--index", run / "index.txt", "--codes", codes,
                       lines[5], "-k", 3)
    assert rc == 0 and out2 == out
    np.save(codes, np.zeros((3, 4), np.float32))
    rc, _, err = smim(capsys, "neighbors", run / "run", "--index", run / "index.txt", "--codes", codes, "x")
    assert rc == 2 and "does not match" in err


def test_missing_model_is_a_one_line_error(run, tmp_path, capsys):
    rc, out, err = smim(capsys, "sample", tmp_path / "nope", "-n", 2)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "no such model" in err
