"""Issue #14, reliability round two: every user mistake and resource failure ends in one
line on stderr with exit status 2 and no traceback; text that is not UTF-8 text is refused
naming file and line; a run directory has one writer and one identity; flags and help
come from the dataclass fields. Table-driven: each case names the class of mistake it
stands for. Most cases call `smim`'s main() in this process (an exception it did not turn
into one line would fail the test); the ones about processes (locks, kills, full disks)
run the real CLI in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sentencemim import checkpoint, rundir
from sentencemim.cli import build_parser, main

from conftest import write_corpus

SMIM = [sys.executable, "-m", "sentencemim.cli"]
TINY = ["--embedding-dim", "8", "--hidden-dim", "8", "--latent-dim", "2", "--batch-size", "10"]
ENV = {"SENTENCEMIM_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_main(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, cmd: str | None = None) -> str:
    """The single 'error:' line of stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    if cmd:
        assert lines[0].startswith(f"smim {cmd}: error: "), lines[0]
    return lines[0]


def smim(*args, env=None, timeout=180, **kw):
    return subprocess.run(SMIM + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (5 steps) and its exported model directory."""
    root = tmp_path_factory.mktemp("rel")
    corpus = write_corpus(root / "corpus")
    r = smim("train", "--corpus", corpus, *TINY, "--max-steps", 5, "--log-every", 1, "--out", root / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    r = smim("export", root / "run", "--out", root / "model")
    assert r.returncode == 0, r.stderr
    return root


# ------------------------------------------------------------------------- every numeric flag
def _subcommands(parser, path=()):
    """(path of subcommand names, parser) for every leaf subcommand of smim."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _subcommands(p, path + (name,))


def _numeric_flags():
    out = []
    for path, p in _subcommands(build_parser()):
        for a in p._actions:
            spec = getattr(a.type, "spec", None)
            if a.option_strings and spec is not None:
                out.append((path, a.option_strings[-1], a.type.__name__, spec.metadata))
    return out


NUMERIC = _numeric_flags()
FLOATS = [(path, flag) for path, flag, kind, _ in NUMERIC if kind == "float"]


def test_the_tables_cover_every_subcommand_and_the_float_flags_of_the_issue():
    cmds = {" ".join(path) for path, _ in _subcommands(build_parser())}
    assert {"train", "evaluate", "report", "sample", "reconstruct", "interpolate", "encode", "neighbors",
            "qa rank", "qa answer", "reproduce", "export"} <= cmds
    floats = {(" ".join(p), f) for p, f in FLOATS}
    assert {("train", "--lr"), ("train", "--clip"), ("sample", "--std"), ("sample", "--temperature"),
            ("reconstruct", "--scale"), ("train", "--logvar-floor"), ("interpolate", "--top-p")} <= floats


def test_no_flag_uses_a_raw_int_or_float_type():
    """A bare `type=float` accepts nan and inf; every numeric flag must use a checked type."""
    raw = [(" ".join(path), a.option_strings) for path, p in _subcommands(build_parser()) for a in p._actions
           if a.type in (int, float)]
    assert raw == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
@pytest.mark.parametrize("path,flag", FLOATS, ids=[" ".join(p) + " " + f for p, f in FLOATS])
def test_every_float_flag_refuses_nan_and_infinity(capsys, path, flag, value):
    rc, out, err = run_main(capsys, *path, f"{flag}={value}")  # '--x -inf' would read as a flag
    assert rc == 2 and out == ""
    line = one_error_line(err, " ".join(path))
    assert f"argument {flag}: must be a finite number" in line


def _out_of_range(kind, m):
    if m.get("ge") is not None:
        return m["ge"] - 1
    if m.get("gt") is not None:
        return m["gt"]
    if m.get("le") is not None:
        return m["le"] + 1
    if m.get("lt") is not None:
        return m["lt"]
    return None


RANGED = [(p, f, k, m) for p, f, k, m in NUMERIC if _out_of_range(k, m) is not None]


@pytest.mark.parametrize("path,flag,kind,meta", RANGED, ids=[" ".join(p) + " " + f for p, f, _, _ in RANGED])
def test_every_numeric_flag_refuses_out_of_range_and_non_numbers(capsys, path, flag, kind, meta):
    """Checked by the parser: before any model or data is read (no model path is even given)."""
    bad = _out_of_range(kind, meta)
    rc, _, err = run_main(capsys, *path, flag, bad)
    assert rc == 2 and f"argument {flag}: must be" in one_error_line(err, " ".join(path))
    rc, _, err = run_main(capsys, *path, flag, "twelve")
    assert rc == 2 and f"argument {flag}: must be a" in one_error_line(err, " ".join(path))


def test_every_flag_says_what_it_means_and_lists_its_choices():
    for path, p in _subcommands(build_parser()):
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            name = f"smim {' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
            text = (a.help or "").split("(default:")[0].strip()
            assert len(text) >= 8, f"{name}: no help text"
            if a.choices:
                shown = a.metavar is None or all(str(c) in a.help for c in a.choices)
                assert shown, f"{name}: choices not shown"


def test_device_defaults_to_auto_in_every_subcommand():
    defaults = {" ".join(path): a.default for path, p in _subcommands(build_parser()) for a in p._actions
                if "--device" in a.option_strings}
    train_default = defaults.pop("train")
    assert train_default is None  # None = the config's default, which is:
    from sentencemim.config import ReportConfig, TrainConfig
    assert TrainConfig().device == ReportConfig().device == "auto"
    assert defaults.pop("reproduce") is None  # reproduce: the config's
    assert set(defaults.values()) == {"auto"}, defaults


def test_help_and_argument_errors_import_no_torch():
    code = textwrap.dedent("""
        import sys
        from sentencemim.cli import main
        for argv in (["--help"], ["train", "--lr", "nan"], ["sample", "--help"], ["qa", "rank", "--help"]):
            try:
                main(argv)
            except SystemExit:
                pass
        print("torch" in sys.modules, "numpy" in sys.modules)
        from sentencemim import SentenceMIM, ModelConfig, TrainConfig, UserError, Vocab, SentenceAE
        print(SentenceMIM.__name__, "torch" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == ["False False", "SentenceMIM True"]


# ------------------------------------------------------------------------- the table of mistakes
def _utf16_bom(tmp, c, root):
    (c / "train.txt").write_bytes("the cat\nsat\n".encode("utf-16"))
    return ["train", "--corpus", c, *TINY, "--out", tmp / "r"], "train.txt:1: UTF-16 or UTF-32 text"


def _utf16_no_bom(tmp, c, root):
    (c / "valid.txt").write_bytes("the cat\nsat\n".encode("utf-16-le"))
    return ["train", "--corpus", c, *TINY, "--out", tmp / "r"], "valid.txt:1: NUL byte"


def _nul_byte(tmp, c, root):
    (c / "train.txt").write_bytes(b"the cat\nsat on\nthe\x00mat\n")
    return ["train", "--corpus", c, *TINY, "--out", tmp / "r"], "train.txt:3: NUL byte"


def _binary(tmp, c, root):
    (c / "train.txt").write_bytes(bytes(range(1, 256)) * 4)
    return ["train", "--corpus", c, *TINY, "--out", tmp / "r"], "train.txt:1: control byte 0x01"


def _invalid_utf8_input(tmp, c, root):
    (tmp / "in.txt").write_bytes(b"the cat\n\xff\xfe\xfa\n")
    return ["encode", root / "model", "--input", tmp / "in.txt", "--output", tmp / "o.npy"], "in.txt:2: invalid UTF-8"


def _utf16_input(tmp, c, root):
    (tmp / "in.txt").write_bytes("the cat\n".encode("utf-16"))
    return ["neighbors", root / "model", "--index", tmp / "in.txt", "the cat"], "in.txt:1: UTF-16"


def _nan_in_config_json(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["logvar_floor"] = float("nan")
    (d / "config.json").write_text(json.dumps(cfg))  # json writes NaN, and reads it back
    return ["sample", d], "config.json: model.logvar_floor must be a finite number, got nan"


def _string_in_config_json(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["latent_dim"] = "4"
    (d / "config.json").write_text(json.dumps(cfg))
    return ["evaluate", d, "--repeats", 1], "config.json: model.latent_dim must be an integer, got '4' (str)"


def _string_in_run_config_json(tmp, c, root):
    d = tmp / "run"
    shutil.copytree(root / "run", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["latent_dim"] = "4"
    (d / "config.json").write_text(json.dumps(cfg))
    return ["train", "--out", d, "--resume", "--max-steps", 7], "run/config.json: model.latent_dim must be an integer"


def _bool_in_train_section(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["train"]["batch_size"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    return ["sample", d], "config.json: train.batch_size must be an integer, got True"


def _config_json_not_an_object(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    (d / "config.json").write_text("[1, 2]")
    return ["sample", d], "config.json: not a sentencemim model config"


def _vocab_with_numbers(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    v = json.loads((d / "vocab.json").read_text())
    v["itos"][5] = 5
    (d / "vocab.json").write_text(json.dumps(v))
    return ["sample", d], "vocab.json: 'itos' and 'unk_aliases' must be lists of strings"


def _swapped_vocab_same_size(tmp, c, root):
    d = tmp / "m"
    shutil.copytree(root / "model", d)
    v = json.loads((d / "vocab.json").read_text())
    v["itos"][4], v["itos"][5] = v["itos"][5], v["itos"][4]
    (d / "vocab.json").write_text(json.dumps(v))
    return ["sample", d], "vocab.json: not the vocabulary this model was trained with"


def _swapped_vocab_in_run(tmp, c, root):
    d = tmp / "run"
    shutil.copytree(root / "run", d)
    v = json.loads((d / "vocab.json").read_text())
    v["itos"][4], v["itos"][5] = v["itos"][5], v["itos"][4]
    (d / "vocab.json").write_text(json.dumps(v))
    return ["evaluate", d, "--repeats", 1], "vocab.json: not the vocabulary this model was trained with"


def _reproduce_config(tmp, **changes):
    cfg = {"name": "t", "corpus": "synthetic", "runs_dir": str(tmp / "runs"), "variants": ["mim"],
           "latent_dims": [2], "model": {"embedding_dim": 8, "hidden_dim": 8}, "train": {"max_steps": 2}}
    for k, v in changes.items():
        cfg[k] = v
    p = tmp / "cfg.json"
    p.write_text(json.dumps(cfg))
    return p


def _reproduce_string_batch(tmp, c, root):
    p = _reproduce_config(tmp, train={"batch_size": "20"})
    return ["reproduce", p, "--dry-run"], "cfg.json: train.batch_size must be an integer, got '20' (str)"


def _reproduce_string_dims(tmp, c, root):
    p = _reproduce_config(tmp, latent_dims=["16"])
    return ["reproduce", p, "--dry-run"], "cfg.json: latent_dims must be a list of positive integers, got '16'"


def _reproduce_bad_evaluate(tmp, c, root):
    p = _reproduce_config(tmp, evaluate={"iwae_k": -1})
    return ["reproduce", p, "--dry-run"], "cfg.json: evaluate.iwae_k must be an integer >= 0, got -1"


def _reproduce_nan_lr(tmp, c, root):
    p = tmp / "cfg.json"
    p.write_text(_reproduce_config(tmp).read_text().replace('"max_steps": 2', '"lr": NaN'))
    return ["reproduce", p, "--dry-run"], "cfg.json: train.lr must be a finite number, got nan"


def _reproduce_not_json(tmp, c, root):
    p = tmp / "cfg.json"
    p.write_text("{name: t")
    return ["reproduce", p], "cfg.json: not a readable config"


def _reproduce_threads(tmp, c, root):
    return ["reproduce", _reproduce_config(tmp), "--threads", 0], "argument --threads: must be a positive integer"


def _reproduce_bf16(tmp, c, root):
    from sentencemim.eval.scoring import bf16_problem
    if bf16_problem("cpu") is None:
        pytest.skip("this CPU runs bf16: not refused here")
    p = _reproduce_config(tmp, evaluate={"precision": "bf16", "device": "cpu"})
    return ["reproduce", p, "--no-report"], "--precision bf16: this CPU has no oneDNN bf16"


def _evaluate_bf16(tmp, c, root):
    from sentencemim.eval.scoring import bf16_problem
    if bf16_problem("cpu") is None:
        pytest.skip("this CPU runs bf16: not refused here")
    return ["evaluate", root / "run", "--precision", "bf16", "--device", "cpu"], "--precision bf16"


def _missing_gpu_train(tmp, c, root):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    return ["train", "--corpus", c, *TINY, "--device", "cuda", "--out", tmp / "r"], \
        "--device 'cuda': no CUDA GPU is available here"


def _missing_gpu_sample(tmp, c, root):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    return ["sample", root / "model", "--device", "cuda:1"], "--device 'cuda:1': no CUDA GPU"


def _bad_device_name(tmp, c, root):
    return ["evaluate", root / "run", "--device", "gpu"], "argument --device: must be auto"


def _huge_model(tmp, c, root):
    return ["train", "--corpus", c, "--hidden-dim", 100000, "--out", tmp / "r"], "the model has"


def _out_is_a_file(tmp, c, root):
    (tmp / "f").write_text("x")
    return ["train", "--corpus", c, *TINY, "--out", tmp / "f"], "exists and is not a directory"


def _out_is_a_model_dir(tmp, c, root):
    shutil.copytree(root / "model", tmp / "m")
    return ["train", "--corpus", c, *TINY, "--out", tmp / "m"], "holds a model directory"


def _resume_refuses_changed_flags(tmp, c, root):
    shutil.copytree(root / "run", tmp / "run")
    return ["train", "--out", tmp / "run", "--resume", "--latent-dim", 4, "--lr", 0.01, "--batch-size", 32], \
        "--resume: --latent-dim 4 (the run has 2); --batch-size 32 (the run has 10); --lr 0.01 (the run has 0.001)"


def _resume_refuses_changed_corpus(tmp, c, root):
    shutil.copytree(root / "run", tmp / "run")
    return ["train", "--out", tmp / "run", "--resume", "--corpus", "synthetic"], "--corpus synthetic (the run has"


def _resume_before_first_checkpoint(tmp, c, root):
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").write_text('{"kind": "event", "event": "start", "step": 0}\n')
    return ["train", "--out", tmp / "run", "--resume"], "stopped before its first checkpoint; start it again"


def _damaged_metrics_middle(tmp, c, root):
    shutil.copytree(root / "run", tmp / "run")
    lines = (tmp / "run" / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (tmp / "run" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return ["train", "--out", tmp / "run", "--resume", "--max-steps", 6, "--quiet"], \
        "metrics.jsonl:2: not a JSON record"


def _damaged_fingerprints(tmp, c, root):
    shutil.copytree(root / "run", tmp / "run")
    (tmp / "run" / "fingerprints.json").write_text("{")
    return ["train", "--out", tmp / "run", "--resume", "--max-steps", 6], "fingerprints.json: damaged"


def _npy_output_name(tmp, c, root):
    (tmp / "in.txt").write_text("the cat\n")
    return ["encode", root / "model", "--input", tmp / "in.txt", "--output", tmp / "o.txt"], \
        "--output must name a .npy file"


def _json_to_a_full_device(tmp, c, root):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    return ["evaluate", root / "run", "--repeats", 1, "--iwae-k", 0, "--no-bleu", "--json", "/dev/full"], \
        "/dev/full: no space left on device"


def _too_few_sentences(tmp, c, root):
    return ["evaluate", root / "run", "--max-sentences", 2, "--repeats", 1, "--iwae-k", 0, "--no-bleu"], \
        "needs more than 3 distinct codes, got 2"


def _npy_output_is_a_folder(tmp, c, root):
    (tmp / "in.txt").write_text("the cat\n")
    (tmp / "d.npy").mkdir()
    return ["encode", root / "model", "--input", tmp / "in.txt", "--output", tmp / "d.npy"], "d.npy: not a regular file"


CASES = [  # (case, class of mistake it stands for)
    (_utf16_bom, "text: not UTF-8"), (_utf16_no_bom, "text: not UTF-8"), (_nul_byte, "text: binary"),
    (_binary, "text: binary"), (_invalid_utf8_input, "text: not UTF-8"), (_utf16_input, "text: not UTF-8"),
    (_nan_in_config_json, "saved JSON: non-finite"), (_string_in_config_json, "saved JSON: wrong type"),
    (_bool_in_train_section, "saved JSON: wrong type"), (_string_in_run_config_json, "saved JSON: wrong type"),
    (_config_json_not_an_object, "saved JSON: wrong shape"),
    (_vocab_with_numbers, "saved JSON: wrong type"), (_swapped_vocab_same_size, "identity: vocabulary"),
    (_swapped_vocab_in_run, "identity: vocabulary"), (_reproduce_string_batch, "config file: wrong type"),
    (_reproduce_string_dims, "config file: wrong type"), (_reproduce_bad_evaluate, "config file: out of range"),
    (_reproduce_nan_lr, "config file: non-finite"), (_reproduce_not_json, "config file: syntax"),
    (_reproduce_threads, "flag: out of range"), (_reproduce_bf16, "resource: precision"),
    (_evaluate_bf16, "resource: precision"), (_missing_gpu_train, "resource: GPU"),
    (_missing_gpu_sample, "resource: GPU"), (_bad_device_name, "flag: syntax"), (_huge_model, "resource: memory"),
    (_out_is_a_file, "run directory: path"), (_out_is_a_model_dir, "run directory: foreign folder"),
    (_resume_refuses_changed_flags, "run directory: resume flags"),
    (_resume_refuses_changed_corpus, "run directory: resume flags"),
    (_resume_before_first_checkpoint, "run directory: nothing to resume"),
    (_damaged_metrics_middle, "run directory: damaged record"), (_damaged_fingerprints, "run directory: damaged"),
    (_npy_output_name, "flag: file name"), (_npy_output_is_a_folder, "flag: file name"),
    (_json_to_a_full_device, "resource: disk full"), (_too_few_sentences, "data: too small"),
]


@pytest.mark.parametrize("case,kind", CASES, ids=[c.__name__[1:] for c, _ in CASES])
def test_user_mistake_table(trained, tmp_path, monkeypatch, capsys, case, kind):
    monkeypatch.setenv("SENTENCEMIM_OFFLINE", "1")
    c = write_corpus(tmp_path / "c")
    args, expected = case(tmp_path, c, trained)
    rc, out, err = run_main(capsys, *args)
    line = one_error_line(err)
    assert rc == 2, (kind, err)
    assert expected in line, (kind, line)
    assert not list(tmp_path.rglob(".*.tmp")), "a temporary file was left"
    assert not (tmp_path / "r").exists(), "a failed start left a run folder"


def test_a_case_in_a_real_process_gives_one_line_and_no_traceback(trained, tmp_path):
    c = write_corpus(tmp_path / "c")
    (c / "train.txt").write_bytes("the cat\n".encode("utf-16-le"))
    r = smim("train", "--corpus", c, *TINY, "--out", tmp_path / "r")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "train.txt:1: NUL byte" in r.stderr
    r = smim("train", "--corpus", c, "--debug", "--lr", "inf", "--out", tmp_path / "r")  # an argument error
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_a_bug_is_one_line_with_status_1_and_the_traceback_under_debug(capsys, monkeypatch):
    import sentencemim.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug")
    parser = cli.build_parser

    def patched():
        p = parser()
        for path, sp in _subcommands(p):
            if path == ("export",):
                sp.set_defaults(func=broken)
        return p
    monkeypatch.setattr(cli, "build_parser", patched)
    rc, _, err = run_main(capsys, "export", "x", "--out", "y")
    assert rc == 1 and "internal error" in one_error_line(err, "export") and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["export", "x", "--out", "y", "--debug"])


# ------------------------------------------------------------------------- text is text
def test_cr_only_line_endings_are_lines_not_one_sentence(tmp_path, capsys, monkeypatch):
    c = write_corpus(tmp_path / "c")
    lines = (c / "train.txt").read_text().splitlines()
    (c / "train.txt").write_bytes("\r".join(lines).encode() + b"\r")
    rc, _, err = run_main(capsys, "train", "--corpus", c, *TINY, "--max-steps", 1, "--out", tmp_path / "r")
    assert rc == 0, err
    assert f"train.txt: {len(lines)} lines read, {len(lines)} kept" in err
    from sentencemim.data import iter_lines
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes(b"a b\r\nc\rd e\nf\r")
    assert [(n, t.strip()) for n, t in iter_lines(mixed)] == [(1, "a b"), (2, "c"), (3, "d e"), (4, "f")]


# ------------------------------------------------------------------------- run directory
def _train_records(run: Path) -> dict:
    return {r["step"]: r["loss"] for r in rundir.read_metrics(run / "metrics.jsonl") if r["kind"] == "train"}


def test_torn_metrics_line_then_resume(trained, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 6, "loss": 1.2')  # what a crash during an append leaves
    rc, _, err = run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 7)
    assert rc == 0, err
    assert "dropped a torn last record" in err
    recs = rundir.read_metrics(run / "metrics.jsonl")
    assert [x["step"] for x in recs if x["kind"] == "train"] == [1, 2, 3, 4, 5, 6, 7]


def test_flags_given_with_resume_are_applied(trained, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    rc, _, err = run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 9, "--log-every", 2,
                          "--eval-every", 3, "--checkpoint-every", 2, "--device", "cpu",
                          "--lr", "0.001", "--latent-dim", 2)  # values equal to the run's: fine
    assert rc == 0, err
    recs = rundir.read_metrics(run / "metrics.jsonl")
    assert [x["step"] for x in recs if x["kind"] == "train" and x["step"] > 5] == [6, 8]  # log every 2
    assert 6 in [x["step"] for x in recs if x["kind"] == "valid"]  # eval every 3
    assert checkpoint.load(run / "checkpoint-latest.pt")["state"]["step"] == 9
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["max_steps"] == 9 and saved["log_every"] == 2 and saved["eval_every"] == 3


def test_two_writers_on_one_run_directory(trained, tmp_path, capsys):
    """A process holds the lock of a run being resumed and of a new run's folder: a second
    writer of either is refused; after a SIGKILL of the holder nothing stale is left."""
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(trained / "run", run)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from sentencemim.rundir import RunLock
        RunLock({str(run)!r}).acquire(), RunLock({str(fresh)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for out, args in ((run, ["--resume"]), (fresh, ["--corpus", trained / "corpus", *TINY])):
            rc, _, err = run_main(capsys, "train", "--out", out, *args, "--max-steps", 8)
            assert rc == 2
            assert f"another smim process (pid {holder.pid}) is writing this run directory" in one_error_line(err)
        assert sorted(p.name for p in fresh.iterdir()) == [".lock"]
        before = (run / "metrics.jsonl").read_bytes()
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock, nothing stale is left
        holder.wait()
    assert (run / "metrics.jsonl").read_bytes() == before  # the refused writers wrote nothing
    assert run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 6, "--quiet")[0] == 0
    assert run_main(capsys, "train", "--out", fresh, "--corpus", trained / "corpus", *TINY, "--max-steps", 2,
                    "--quiet")[0] == 0


def test_two_real_trainings_on_one_folder_the_second_is_refused(tmp_path):
    c = write_corpus(tmp_path / "c", sizes=(400, 10, 10))
    run = tmp_path / "run"
    a = subprocess.Popen(SMIM + ["train", "--corpus", str(c), *TINY, "--max-steps", "100000", "--log-every", "1",
                                 "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **ENV})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (run / "metrics.jsonl").exists():
            time.sleep(0.05)
        r = smim("train", "--corpus", c, *TINY, "--max-steps", 3, "--out", run)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "another smim process" in r.stderr or "already holds a run" in r.stderr, r.stderr
    finally:
        a.send_signal(signal.SIGTERM)
        a.communicate(timeout=60)
    steps = [x["step"] for x in rundir.read_metrics(run / "metrics.jsonl") if x["kind"] == "train"]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no interleaved records


def test_fingerprints_catch_a_changed_corpus_and_the_flag_overrides(tmp_path, capsys, monkeypatch):
    c = write_corpus(tmp_path / "c")
    run = tmp_path / "run"
    assert run_main(capsys, "train", "--corpus", c, *TINY, "--max-steps", 2, "--out", run, "--quiet")[0] == 0
    fp = json.loads((run / "fingerprints.json").read_text())
    assert set(fp["corpus"]) == {"train", "valid"} and len(fp["vocab.json"]) == 64
    with open(c / "train.txt", "a") as f:
        f.write("the cat sat on the red mat\n")
    rc, _, err = run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 3)
    assert rc == 2 and "the data differ from those the run was trained on: the train split" in err
    assert "--accept-changed-data" in err and err.count("\n") == 1
    rc, _, err = run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 3, "--accept-changed-data")
    assert rc == 0 and "continuing on changed data" in err
    rc, _, err = run_main(capsys, "train", "--out", run, "--resume", "--max-steps", 4, "--quiet")  # new ones hold
    assert rc == 0, err


def test_a_folder_left_before_the_first_checkpoint_is_reused_cleanly(tmp_path, capsys, monkeypatch):
    c = write_corpus(tmp_path / "c")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "vocab.json"):
        (run / name).write_text(json.dumps({"model": {}, "train": {}}) if name == "config.json" else "{}")
    (run / "metrics.jsonl").write_text('{"kind": "event", "event": "start", "step": 0}\n{"kind": "valid", "st')
    (run / ".checkpoint-best.pt.tmp").write_bytes(b"partial")
    rc, _, err = run_main(capsys, "train", "--corpus", c, *TINY, "--max-steps", 2, "--log-every", 1, "--out", run)
    assert rc == 0, err
    assert "stopped before its first checkpoint" in err
    recs = rundir.read_metrics(run / "metrics.jsonl")
    assert [x.get("event") for x in recs if x["kind"] == "event"] == ["start", "end"]  # not appended to
    assert [x["step"] for x in recs if x["kind"] == "train"] == [1, 2]
    assert not list(run.glob(".*.tmp"))


def test_a_run_directory_in_the_old_layout_resumes_exactly(tmp_path, capsys, monkeypatch):
    """Runs started at commit de5121b have no lock file and no fingerprints.json, and the
    same config.json keys. Such a run resumes, records its fingerprints with a note, and
    continues exactly as an uninterrupted run."""
    monkeypatch.setenv("SENTENCEMIM_OFFLINE", "1")
    c = write_corpus(tmp_path / "c")
    base = [*TINY, "--log-every", 1, "--checkpoint-every", 1, "--seed", 3, "--max-epochs", 3]
    assert run_main(capsys, "train", "--corpus", c, *base, "--max-steps", 8, "--out", tmp_path / "full",
                    "--quiet")[0] == 0
    old = tmp_path / "old"
    assert run_main(capsys, "train", "--corpus", c, *base, "--max-steps", 4, "--out", old, "--quiet")[0] == 0
    (old / ".lock").unlink()
    (old / "fingerprints.json").unlink()  # what de5121b wrote: no lock, no fingerprints
    cfg = json.loads((old / "config.json").read_text())
    assert set(cfg) == {"model", "train"}
    de5121b_keys = {"corpus", "data_dir", "objective", "batch_size", "optimizer", "lr", "clip", "lr_decay", "patience",
                    "min_lr", "max_epochs", "max_steps", "eval_every", "eval_max_sentences", "kl_annealing",
                    "kl_anneal_steps", "kl_logistic_k", "max_length", "length_policy", "min_count", "max_vocab",
                    "seed", "log_every", "checkpoint_every", "nan_policy", "device"}
    added_since = {"tensorboard"}  # optional keys with defaults; nothing was renamed or removed
    assert set(cfg["train"]) == de5121b_keys | added_since
    # write what de5121b wrote: its keys only, in config.json and in the checkpoint
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k in de5121b_keys}
    (old / "config.json").write_text(json.dumps(cfg, indent=2))
    state = checkpoint.load(old / "checkpoint-latest.pt")
    state["train_config"] = {k: v for k, v in state["train_config"].items() if k in de5121b_keys}
    checkpoint.save(state, old / "checkpoint-latest.pt")
    state = checkpoint.load(old / "checkpoint-latest.pt")
    assert set(state) == {"format", "model", "optimizer", "model_config", "train_config", "state", "window", "rng"}
    rc, _, err = run_main(capsys, "train", "--out", old, "--resume", "--max-steps", 8)
    assert rc == 0, err
    assert "has no fingerprints.json (a run from before fingerprints); recorded" in err
    assert (old / "fingerprints.json").exists()
    full, resumed = _train_records(tmp_path / "full"), _train_records(old)
    assert sorted(resumed) == list(range(1, 9))
    for step, loss in full.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step


# ------------------------------------------------------------------------- a full disk
SITE = textwrap.dedent('''
    """Injected ENOSPC (the test fallback where no tmpfs can be mounted): writes to files
    under $SMIM_FULL_DIR fail once $SMIM_FULL_BYTES bytes have been written there."""
    import builtins, errno, io, os
    _dir, _budget = os.environ["SMIM_FULL_DIR"], [int(os.environ["SMIM_FULL_BYTES"])]
    _open = builtins.open

    class _Full:
        def __init__(self, f):
            self._f = f
        def write(self, data):
            _budget[0] -= len(data)
            if _budget[0] < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(data)
        def __getattr__(self, name):
            return getattr(self._f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self._f.close()
        def __iter__(self):
            return iter(self._f)

    def _patched(file, mode="r", *a, **k):
        f = _open(file, mode, *a, **k)
        if any(m in mode for m in "wax") and str(os.path.abspath(file)).startswith(_dir):
            return _Full(f)
        return f
    builtins.open = io.open = _patched
''')


@pytest.fixture
def full_fs(tmp_path):
    """(folder, env): a folder on a nearly full filesystem. A 64 KiB tmpfs with `free_kib`
    left where mounting works (root); else an injected ENOSPC after as many bytes."""
    made = []

    def make(free_kib: int):
        d = tmp_path / f"full{len(made)}"
        d.mkdir()
        mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode == 0
        if mounted:
            made.append(d)
            with open(d / "filler", "wb") as f:
                f.write(b"\0" * ((64 - free_kib) * 1024))
            return d, {}
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITE)
        return d, {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                   "SMIM_FULL_DIR": str(d), "SMIM_FULL_BYTES": str(free_kib * 1024)}
    yield make
    for d in made:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.parametrize("free_kib", [4, 12, 40])
def test_full_disk_during_train(tmp_path, full_fs, free_kib):
    """4 KiB: config.json fits, the rest does not; 12: the first checkpoint does not; 40: a later one."""
    c = write_corpus(tmp_path / "c")
    d, env = full_fs(free_kib)
    r = smim("train", "--corpus", c, *TINY, "--max-steps", 60, "--checkpoint-every", 1, "--log-every", 1,
             "--out", d / "run", env=env)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr, "train")
    assert "no space left on device" in line
    assert not list((d / "run").glob(".*.tmp")), "a temporary file was left"
    if (d / "run" / "checkpoint-latest.pt").exists():
        checkpoint.load(d / "run" / "checkpoint-latest.pt")  # a kept checkpoint is whole


def test_full_disk_during_encode(trained, tmp_path, full_fs):
    d, env = full_fs(8)
    (tmp_path / "in.txt").write_text("the cat sat\n" * 5000)  # 5000 x 2 float32 = 40 KB
    r = smim("encode", trained / "model", "--input", tmp_path / "in.txt", "--output", d / "codes.npy",
             "--std-output", d / "std.npy", env=env)
    assert r.returncode == 2, r.stderr  # was a bus error (SIGBUS from a memory map)
    assert "codes.npy: no space left on device" in one_error_line(r.stderr, "encode")
    assert sorted(p.name for p in d.iterdir() if p.name != "filler") == []
