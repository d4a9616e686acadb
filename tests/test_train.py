import copy
import json
import subprocess
import sys

import pytest
import torch

from sentencemim import checkpoint
from sentencemim.config import ModelConfig, TrainConfig
from sentencemim.errors import UserError
from sentencemim.modelio import load_model
from sentencemim.train import train

from conftest import write_corpus

TINY = dict(embedding_dim=8, hidden_dim=8, latent_dim=3)


def _cfgs(corpus, **kw):
    tc = dict(corpus=str(corpus), batch_size=8, log_every=1, max_epochs=50, patience=1, seed=5)
    tc.update(kw)
    return ModelConfig(**TINY), TrainConfig(**tc)


def _train_losses(run):
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


@pytest.mark.parametrize("objective,annealing", [("mim", "none"), ("vae", "logistic"), ("ae", "none")])
def test_resume_reproduces_uninterrupted_loss_curve(tmp_path, objective, annealing):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, objective=objective, kl_annealing=annealing, kl_anneal_steps=10, max_steps=30)
    train(mc, tc, tmp_path / "full", quiet=True)
    mc, tc = _cfgs(corpus, objective=objective, kl_annealing=annealing, kl_anneal_steps=10, max_steps=13)
    train(mc, tc, tmp_path / "split", quiet=True)
    train(None, None, tmp_path / "split", resume=True, overrides={"max_steps": 30}, quiet=True)
    full, split = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "split")
    assert sorted(full) == sorted(split) == list(range(1, 31))  # 8 batches an epoch: crosses epochs
    for step in full:
        assert split[step] == pytest.approx(full[step], rel=1e-6, abs=1e-6), step
    a = checkpoint.load(tmp_path / "full" / "checkpoint-latest.pt")["model"]
    b = checkpoint.load(tmp_path / "split" / "checkpoint-latest.pt")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_training_lowers_validation_loss_and_writes_run(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, max_steps=60, lr=0.01)
    result = train(mc, tc, tmp_path / "run", quiet=True)
    assert result["status"] == "finished" and result["step"] == 60
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if r["kind"] == "valid"]
    assert val[0]["step"] == 0 and val[-1]["step"] == 60
    assert val[-1]["rec_per_sentence"] < val[0]["rec_per_sentence"]
    for name in ("config.json", "vocab.json", "checkpoint-latest.pt", "checkpoint-best.pt"):
        assert (tmp_path / "run" / name).is_file()
    # the checkpoint is plain data: loads with weights_only=True
    state = torch.load(tmp_path / "run" / "checkpoint-latest.pt", weights_only=True)
    assert state["state"]["step"] == 60


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, max_steps=5)
    train(mc, tc, tmp_path / "run", quiet=True)
    m1, v1, info = load_model(tmp_path / "run", "latest")
    m2, v2, _ = load_model(tmp_path / "run" / "checkpoint-latest.pt")
    assert info["step"] == 5 and v1.itos == v2.itos
    ids = [torch.tensor([v1.encode(["the", "cat"])]).numpy()[0]]
    from sentencemim.data import collate
    b = collate(ids, [0])
    with torch.no_grad():
        assert torch.equal(m1(b, "ae").rec, m2(b, "ae").rec)


def test_existing_run_needs_resume(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, max_steps=2)
    train(mc, tc, tmp_path / "run", quiet=True)
    with pytest.raises(UserError, match="--resume"):
        train(*_cfgs(corpus, max_steps=2), tmp_path / "run", quiet=True)
    with pytest.raises(UserError, match="no checkpoint"):
        train(None, None, tmp_path / "other", resume=True, quiet=True)


def test_cli_train_and_evaluate_smoke(tmp_path):
    env_run = tmp_path / "run"
    corpus = write_corpus(tmp_path / "c", sizes=(200, 20, 100))
    cmd = [sys.executable, "-m", "sentencemim.cli", "train", "--corpus", str(corpus), "--objective", "vae",
           "--kl-annealing", "linear", "--kl-anneal-steps", "10", "--embedding-dim", "8", "--hidden-dim", "8",
           "--latent-dim", "2", "--max-steps", "15", "--batch-size", "20", "--out", str(env_run), "--evaluate"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["step"] == 15
    main_job = json.loads((env_run / "eval-test.json").read_text())  # --evaluate: the test split
    assert main_job["split"] == "test" and main_job["sentences"] == 100
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "-m", "sentencemim.cli", "evaluate", str(env_run), "--repeats", "2",
                        "--max-sentences", "100", "--json", str(out), "--heldout-methods", "q,gauss",
                        "--heldout-valid", "5"],  # the default methods ran in --evaluate above
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["sentences"] == 100
    for key in ("melbo", "elbo", "reconstruction"):
        assert rep[key]["ppl_words_eos"] > 1 and rep[key]["ppl_paper"] > 1
    # MELBO = mean reconstruction NLL + log N; the ELBO adds the KL instead
    assert rep["melbo"]["log_N"] == pytest.approx(4.60517, abs=1e-4)
    assert "MELBO" in r.stdout and "[paper convention]" in r.stdout and "[words+<eos>]" in r.stdout
    assert 0 <= rep["bleu"]["sentence_bleu1"] <= 1


# `smim train` under torchrun, then the threads each rank has beyond those it had before
# (Linux: /proc/self/task; elsewhere nothing is printed)
_TORCHRUN_TRAIN = """
import os, sys
from collections import Counter
from sentencemim.cli import main

def threads():
    names = Counter()
    for t in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names[f.read().strip()] += 1
        except OSError:  # ended meanwhile
            pass
    return names

before = threads()
code = main(sys.argv[1:])
if before:
    print("rank", os.environ["RANK"], "threads left by train:", sorted((threads() - before).elements()),
          file=sys.stderr)
sys.exit(code)
"""


def test_torchrun_two_processes_train_in_step(tmp_path):
    """DDP through torchrun on CPU (gloo): both ranks take the same number of steps,
    rank 0 alone writes the run, and teardown frees the process group: no gloo thread
    is left to race the interpreter's exit (it used to abort a rank now and then)."""
    run = tmp_path / "ddp"
    script = tmp_path / "train_then_threads.py"
    script.write_text(_TORCHRUN_TRAIN)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), "train", "--corpus", "synthetic", "--embedding-dim", "8", "--hidden-dim", "8",
           "--latent-dim", "2", "--max-steps", "6", "--log-every", "3", "--out", str(run)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('"status": "finished"') == 1  # printed by rank 0 only
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if x["kind"] == "train"] == [3, 6]
    assert "world size 2" in r.stderr
    if sys.platform.startswith("linux"):  # each rank ends with the threads it started with
        left = [l for l in r.stderr.splitlines() if "threads left by train:" in l]
        assert sorted(left) == [f"rank {k} threads left by train: []" for k in (0, 1)], left or r.stderr[-2000:]


def test_fused_adam_is_the_same_algorithm_and_old_checkpoints_resume_on_it(tmp_path):
    from sentencemim.train import load_optimizer_state, make_optimizer

    torch.manual_seed(0)
    w0 = torch.randn(50, 7)
    xs = [torch.randn(16, 50) for _ in range(20)]

    def run(fused):
        w = torch.nn.Parameter(w0.clone())
        opt = make_optimizer("adam", [w], 1e-2)
        if not fused:  # the implementation in-flight runs were started with
            opt = torch.optim.Adam([w], lr=1e-2)
        for x in xs:
            opt.zero_grad()
            (x @ w).tanh().pow(2).sum().backward()
            opt.step()
        return w.detach(), opt

    (a, fused_opt), (b, plain_opt) = run(True), run(False)
    assert fused_opt.param_groups[0]["fused"] is True
    assert not plain_opt.param_groups[0].get("fused")
    assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, w0)

    # a state dict from the plain implementation names it in its param groups: loading
    # keeps the fused kernel, with the step counters where the kernel wants them, and the
    # next step matches the plain one
    w = torch.nn.Parameter(b.clone())
    opt = make_optimizer("adam", [w], 1e-2)
    load_optimizer_state(opt, copy.deepcopy(plain_opt.state_dict()))  # (loading shares tensors)
    assert opt.param_groups[0]["fused"] is True
    step = opt.state[w]["step"]
    assert step.device == w.device and step.dtype == torch.float32 and float(step) == len(xs)
    for o, p in ((opt, w), (plain_opt, plain_opt.param_groups[0]["params"][0])):
        o.zero_grad()
        (xs[0] @ p).tanh().pow(2).sum().backward()
        o.step()
    assert torch.allclose(w.detach(), plain_opt.param_groups[0]["params"][0].detach(), atol=1e-6)


def test_a_run_resumed_from_a_per_tensor_adam_checkpoint_trains_on_the_fused_kernel(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, max_steps=4)
    train(mc, tc, tmp_path / "run", quiet=True)
    path = tmp_path / "run" / "checkpoint-latest.pt"
    state = checkpoint.load(path)
    assert state["optimizer"]["param_groups"][0]["fused"] is True
    for g in state["optimizer"]["param_groups"]:  # as saved before the fused kernel
        g["fused"], g["foreach"] = None, None
    checkpoint.save(state, path)
    train(None, None, tmp_path / "run", resume=True, overrides={"max_steps": 8}, quiet=True)
    groups = checkpoint.load(path)["optimizer"]["param_groups"]
    assert checkpoint.load(path)["state"]["step"] == 8 and all(g["fused"] is True for g in groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_fused_adam_resumes_on_cuda_from_a_cpu_saved_per_tensor_state():
    from sentencemim.train import load_optimizer_state, make_optimizer
    w_cpu = torch.nn.Parameter(torch.randn(5, 3))
    plain = torch.optim.Adam([w_cpu], lr=1e-2)
    w_cpu.sum().backward()
    plain.step()
    w = torch.nn.Parameter(w_cpu.detach().cuda())
    opt = make_optimizer("adam", [w], 1e-2)
    load_optimizer_state(opt, plain.state_dict())
    assert opt.state[w]["step"].device == w.device
    w.sum().backward()
    opt.step()  # the fused CUDA kernel refuses step counters left on the CPU


def test_resume_at_or_past_max_steps_takes_no_step(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    mc, tc = _cfgs(corpus, max_steps=12)
    train(mc, tc, tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    best = (tmp_path / "run" / "checkpoint-best.pt").read_bytes()
    for limit in (12, 5):  # at the limit, and below where the run already is
        result = train(None, None, tmp_path / "run", resume=True, overrides={"max_steps": limit}, quiet=True)
        assert result["status"] == "finished" and result["step"] == 12
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in recs) == 12
    assert not [r for r in recs if r["kind"] in ("train", "valid") and r["step"] > 12]
    assert [json.loads(l) for l in before.splitlines()] == [r for r in recs if r.get("event") != "resume"]
    assert (tmp_path / "run" / "checkpoint-best.pt").read_bytes() == best
