"""Every user mistake gets exit status 2 and one line on stderr naming the problem
(no traceback). The cases run the CLI's main() in this process, with its own stdout and
stderr (a subprocess each cost about two seconds of imports); the entry point itself runs as
a real process in test_debug_shows_traceback here and in tests/test_reliability.py."""

import contextlib
import io
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest

from conftest import write_corpus
from sentencemim.cli import main

SMIM = [sys.executable, "-m", "sentencemim.cli"]
TINY = ["--embedding-dim", "8", "--hidden-dim", "8", "--latent-dim", "2", "--batch-size", "10"]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def smim(*args, env=None):
    """`smim ARGS` through cli.main in this process, with `env` set for the call."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")  # printed to the redirected stderr, as the real CLI prints them
            warnings.showwarning = _show_on_stderr
            code = main([str(a) for a in args])
    return Ran(code, out.getvalue(), err.getvalue())


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run and its exported model directory, shared by the cases."""
    root = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(root / "corpus")
    r = smim("train", "--corpus", corpus, *TINY, "--max-steps", "3", "--out", root / "run")
    assert r.returncode == 0, r.stderr
    from sentencemim.modelio import load_model, save_pretrained
    model, vocab, _ = load_model(root / "run")
    save_pretrained(model, vocab, root / "model")
    return root


def _case_missing_split(tmp):
    c = write_corpus(tmp / "c")
    (c / "train.txt").unlink()
    return ["train", "--corpus", c, "--out", tmp / "r"], "lacks train.txt"


def _case_empty_file(tmp):
    c = write_corpus(tmp / "c")
    (c / "train.txt").write_text("")
    return ["train", "--corpus", c, "--out", tmp / "r"], "train.txt: file is empty"


def _case_blank_lines_only(tmp):
    c = write_corpus(tmp / "c")
    (c / "valid.txt").write_text("\n   \n\t\n")
    return ["train", "--corpus", c, "--out", tmp / "r"], "valid.txt: no sentences left"


def _case_invalid_utf8(tmp):
    c = write_corpus(tmp / "c")
    (c / "train.txt").write_bytes(b"a b\nc d\ne \xc3\x28 f\n")
    return ["train", "--corpus", c, "--out", tmp / "r"], "train.txt:3: invalid UTF-8"


def _case_unknown_corpus(tmp):
    return ["train", "--corpus", "penn-treebank", "--out", tmp / "r"], "unknown corpus 'penn-treebank'"


def _case_data_dir_without_files(tmp):
    (tmp / "empty").mkdir()
    return ["train", "--corpus", "ptb", "--data-dir", tmp / "empty", "--out", tmp / "r"], "ptb/train.txt"


def _case_negative_size(tmp):
    return ["train", "--corpus", "synthetic", "--latent-dim", "-4", "--out", tmp / "r"], "argument --latent-dim: must be an integer >= 0, got -4"


def _case_zero_batch(tmp):
    return ["train", "--corpus", "synthetic", "--batch-size", "0", "--out", tmp / "r"], "argument --batch-size: must be a positive integer, got 0"


def _case_unknown_objective(tmp):
    return ["train", "--corpus", "synthetic", "--objective", "gan", "--out", tmp / "r"], "argument --objective: invalid choice: 'gan'"


def _case_bad_dropout(tmp):
    return ["train", "--corpus", "synthetic", "--embedding-dropout", "1.5", "--out", tmp / "r"], "argument --embedding-dropout: must be in [0, 1), got 1.5"


def _case_resume_nothing(tmp):
    return ["train", "--out", tmp / "nothing", "--resume"], "no checkpoint"


def _case_no_such_model(tmp):
    return ["evaluate", tmp / "nowhere"], "no such model"


CASES = [_case_missing_split, _case_empty_file, _case_blank_lines_only, _case_invalid_utf8, _case_unknown_corpus,
         _case_data_dir_without_files, _case_negative_size, _case_zero_batch,
         _case_unknown_objective,
         _case_bad_dropout, _case_resume_nothing, _case_no_such_model]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[6:])
def test_user_mistakes_give_one_line_and_status_2(tmp_path, case):
    args, expected = case(tmp_path)
    r = smim(*args, env={"SENTENCEMIM_OFFLINE": "1"})
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and expected in errors[0], r.stderr


def _model_dir_cases():
    def missing_vocab(root, d):
        (d / "vocab.json").unlink()
        return "vocab.json"

    def mismatched_vocab(root, d):
        v = json.loads((d / "vocab.json").read_text())
        v["itos"] = v["itos"][:-2]
        (d / "vocab.json").write_text(json.dumps(v))
        return "do not belong together"

    def missing_config(root, d):
        (d / "config.json").unlink()
        return "config.json: missing"

    def corrupt_safetensors(root, d):
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors: unreadable"

    def garbage_config(root, d):
        (d / "config.json").write_text("{not json")
        return "config.json: not valid JSON"

    return [missing_vocab, mismatched_vocab, missing_config, corrupt_safetensors, garbage_config]


@pytest.mark.parametrize("damage", _model_dir_cases(), ids=lambda f: f.__name__)
def test_broken_model_directory(trained, tmp_path, damage):
    import shutil
    d = tmp_path / "model"
    shutil.copytree(trained / "model", d)
    expected = damage(trained, d)
    r = smim("evaluate", d, "--corpus", trained / "corpus", "--repeats", "1", "--no-bleu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert expected in r.stderr


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_checkpoint(trained, tmp_path, cut):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    ck = run / "checkpoint-best.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    r = smim("evaluate", run, "--repeats", "1", "--no-bleu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "checkpoint-best.pt" in r.stderr and ("truncated or corrupt" in r.stderr or "cut off" in r.stderr)


@pytest.mark.parametrize("what", ["config.json", "pickle"])
def test_a_file_that_is_not_a_checkpoint_is_named_plainly(trained, tmp_path, what):
    if what == "pickle":  # a torch file holding an arbitrary object: refused without unpickling it
        import torch
        path = tmp_path / "other.pt"
        torch.save({"obj": _Unsafe()}, path)
        expected = "holds Python objects beyond tensors and plain data"
    else:
        path, expected = trained / "run" / "config.json", "not a checkpoint: sentencemim checkpoints are torch.save"
    r = smim("evaluate", path, "--repeats", "1", "--no-bleu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and expected in errors[0] and "weights_only" not in r.stderr, r.stderr


class _Unsafe:
    pass


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_traceback(tmp_path, where):
    args = ["train", "--corpus", "nope", "--out", str(tmp_path / "r")]
    args = ["--debug"] + args if where == "before" else args + ["--debug"]
    r = subprocess.run(SMIM + args, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize("flag", ["--json", "--per-sentence"])
def test_unwritable_output_path_is_refused_before_any_work(trained, tmp_path, flag):
    r = smim("evaluate", trained / "run", "--repeats", "1", "--no-bleu", "--iwae-k", "0",
             flag, tmp_path / "no" / "such" / "dir" / "x.out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{flag} " in r.stderr and "x.out" in r.stderr and "does not exist" in r.stderr
    assert "MELBO" not in r.stdout + r.stderr  # nothing was evaluated first


def test_per_sentence_file_gets_its_suffix_and_a_folder_of_that_stem_is_no_obstacle(trained, tmp_path):
    (tmp_path / "results").mkdir()  # numpy writes results.npz beside it
    r = smim("evaluate", trained / "run", "--repeats", "1", "--no-bleu", "--iwae-k", "0", "--max-sentences", "5",
             "--per-sentence", tmp_path / "results")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "results.npz").is_file() and f"to {tmp_path / 'results.npz'}" in r.stderr


@pytest.mark.parametrize("args", [["qa", "baselines", "--data", "toy"], ["curves", "RUN"]])
def test_other_output_files_are_checked_first(trained, tmp_path, args):
    flag = "--out" if args[0] == "curves" else "--json"
    args = [trained / "run" if a == "RUN" else a for a in args]
    r = smim(*args, flag, tmp_path / "missing" / "x.out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{flag} " in r.stderr and "does not exist" in r.stderr


def test_a_data_folder_that_does_not_exist_is_said_when_created(tmp_path):
    r = smim("train", "--corpus", "synthetic", "--data-dir", tmp_path / "dta", *TINY, "--max-steps", "1",
             "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert f"data folder {tmp_path / 'dta'} does not exist; creating it" in r.stderr


def test_crlf_bom_and_a_10000_token_line_are_handled_and_counted(tmp_path):
    c = write_corpus(tmp_path / "c")
    train = (c / "train.txt").read_text().splitlines()
    long_line = " ".join(["cat"] * 10_000)
    text = "\ufeff" + "\r\n".join(train + ["", "   ", long_line]) + "\r\n"
    (c / "train.txt").write_bytes(text.encode("utf-8"))
    r = smim("train", "--corpus", c, *TINY, "--max-steps", "2", "--max-length", "50", "--length-policy", "truncate",
             "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    n = len(train)
    assert f"{n + 3} lines read, {n + 1} kept" in r.stderr and "2 empty skipped" in r.stderr
    assert "1 truncated" in r.stderr
    vocab = json.loads((tmp_path / "r" / "vocab.json").read_text())["itos"]
    assert not any("\ufeff" in w or "\r" in w for w in vocab)
    # the same line under the drop policy is dropped and counted
    r = smim("train", "--corpus", c, *TINY, "--max-steps", "2", "--max-length", "50", "--out", tmp_path / "r2")
    assert r.returncode == 0 and "1 dropped as too long" in r.stderr
