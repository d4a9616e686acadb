"""Model cards: the README.md of a model directory (config.json + model.safetensors +
vocab.json), in the Hugging Face layout (YAML front matter, then Markdown).

    from sentencemim.modelcard import write_model_card
    write_model_card("models/ptb-smim512", run_dir="runs/ptb-smim512")   # -> models/ptb-smim512/README.md

What it states, and where each item comes from:
  objective, sizes, parameters   config.json and the safetensors header of the model directory
  corpus and sha256              the corpus files found now (data dir of the run, or `data_dir`),
                                 hashed when the card is written (said so on the card)
  training command and commit    the run's metrics.jsonl start/resume events, else its
                                 reproduce.json sessions; else an equivalent command rebuilt from
                                 config.json, labelled as such
  steps, epoch, validation       config.json's step, the run's metrics.jsonl
  test numbers                   eval-test.json (`smim evaluate --json`, `smim train --evaluate`), else
                                 the run's analysis.json (`smim reproduce`'s evaluation) when it is of
                                 the exported step; each with its bound, prior, samples and <eos>
                                 convention, as reported, the tightest held-out bounds included

Only json/hashlib here: writing a card imports neither torch nor safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

from .config import ModelConfig, TrainConfig
from .errors import UserError
from .rundir import sha256

OBJECTIVES = {
    "mim": "sMIM: A-MIM learning (the paper's Algorithm 1), loss -log p(x|z) - 1/2 (log q(z|x) + log N(z; 0, I)), "
           "z ~ q(z|x)",
    "vae": "sVAE: the negative ELBO, -log p(x|z) + beta KL(q(z|x) || N(0, I))",
    "ae": "AE: a deterministic auto-encoder, -log p(x|z) at z = the posterior mean",
}
_HIDDEN = {"vocab_size", "pad_id", "unk_id", "sos_id", "eos_id"}
_RUN_FLAGS_NOT_IN_COMMAND = {"device", "data_dir"}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def safetensors_parameters(path: Path) -> int | None:
    """Number of values in a .safetensors file, from its JSON header (no tensor is read)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return None
    total = 0
    for key, t in header.items():
        if key != "__metadata__":
            size = 1
            for s in t["shape"]:
                size *= s
            total += size
    return total


def corpus_files(corpus: str, data_dir: str | None) -> tuple[dict, str]:
    """({split: [paths]}, "") of the corpus's files that exist here, or ({}, why not).
    Nothing is downloaded or generated."""
    from . import corpora
    from .synthetic import SYNTHETIC_NAME
    if corpus == SYNTHETIC_NAME and not (corpora.data_dir(data_dir) / SYNTHETIC_NAME).is_dir():
        return {}, f"not found under {corpora.data_dir(data_dir)}"
    try:
        rc = corpora.resolve(corpus, data_dir, download=False)
    except UserError as e:
        return {}, str(e)
    return {s: [Path(p) for p in ps] for s, ps in rc.files.items()}, ""


def _metrics(run_dir: Path | None) -> list[dict]:
    path = None if run_dir is None else run_dir / "metrics.jsonl"
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return out


def equivalent_command(model: dict, train: dict) -> str:
    """`smim train` with the flags that differ from the defaults (device, data dir left out)."""
    parts = ["smim train"]
    for cls, values, skip in ((TrainConfig, train, _RUN_FLAGS_NOT_IN_COMMAND), (ModelConfig, model, _HIDDEN)):
        for f in dataclasses.fields(cls):
            if f.name in skip or f.name not in values or values[f.name] == f.default:
                continue
            v = values[f.name]
            parts.append(f"--{f.name.replace('_', '-')}" + ("" if v is True else f" {v}"))
    return " ".join(parts) + " --out RUN"


def _training_end(records: list[dict], valid: list[dict]) -> list[str]:
    """Card lines on how the run's training went on after the exported step: where and why
    its last session stopped (or that it had not), and its learning-rate decays, each at its
    step and epoch. Only the events after the last start or resume count: a resumed run keeps
    the events of its earlier sessions in metrics.jsonl."""
    if not records:
        return []
    epoch_at = {r["step"]: r["epoch"] for r in valid if "epoch" in r and "step" in r}

    def at(step):
        return f"step {step}" + (f" (epoch {epoch_at[step]})" if step in epoch_at else "")
    events = [r for r in records if r.get("kind") == "event"]
    starts = [i for i, r in enumerate(events) if r.get("event") in ("start", "resume")]
    last = events[starts[-1] + 1:] if starts else events
    end = next((r for r in reversed(last) if r.get("event") == "end"), None)
    stop = next((r for r in reversed(last) if r.get("event") == "stop"), None)
    cut = next((r for r in reversed(last) if r.get("event") == "interrupted"), None)
    if end:
        why = stop["reason"] if stop and stop.get("step") == end.get("step") else "its step or epoch budget was reached"
        out = [f"- training ended at {at(end['step'])}: {why}"]
    elif cut:
        out = [f"- training was interrupted ({cut.get('signal', 'a signal')}) at {at(cut['step'])} and had not "
               "ended when this card was written"]
    else:
        step = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=None)
        out = [f"- training had not ended when this card was written (last recorded step {step}; still running, "
               "or stopped without a record)"]
    decays = [r for r in events if r.get("event") == "lr_decay"]
    if decays:
        out.append("- learning-rate decays: " + ", ".join(f"to {r['lr']:.3g} at {at(r['step'])}" for r in decays))
    return out


def _fmt(x, digits=3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and abs(x) >= 1e6:
        return f"{x:.3e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _test_section(rep: dict, source: str) -> list[str]:
    L = [f"From {source}: split **{rep.get('split', '?')}** of {rep.get('corpus', '?')}, "
         f"{rep.get('sentences', '?')} sentences, {rep.get('tokens_words_eos', '?')} tokens (words + one <eos> "
         f"each), seed {rep.get('seed', '?')}. All in nats per sentence; PPL = exp(sum NLL / tokens).", ""]
    r = rep.get("reconstruction")
    if r:
        L.append(f"- reconstruction -log p(x|z): {_fmt(r.get('nll_per_sentence'))} ({r.get('what', '')}); "
                 f"PPL {_fmt(r.get('ppl_words_eos'))} [words+<eos>], {_fmt(r.get('ppl_paper'))} [paper convention]")
    if rep.get("kl"):
        L.append(f"- KL(q(z|x) || N(0, I)): {_fmt(rep['kl'].get('mean'))} (analytic)")
    bounds = [(k, rep[k]) for k in ("melbo", "elbo", "elbo_single", "iwae", "elbo_single_train_prior",
                                    "iwae_train_prior", "heldout", "heldout_train_prior")
              if isinstance(rep.get(k), dict) and "bound" in rep[k]]
    if bounds:
        L += ["", "| NLL upper bound | prior | samples | NLL | PPL [words+<eos>] | PPL [paper convention] |",
              "|---|---|---|---|---|---|"]
        for _, b in bounds:
            bound = (f"tightest held-out bound: `{b['method']}` (ESS mean {_fmt(b.get('ess_mean'), 1)} of {b.get('k')})"
                     if "method" in b else b["bound"])
            L.append(f"| {bound} | {b.get('prior', '')} | {b.get('samples', '')} | "
                     f"{_fmt(b.get('nll_per_sentence'))} | {_fmt(b.get('ppl_words_eos'))} | {_fmt(b.get('ppl_paper'))} |")
        for _, b in bounds:
            a = b.get("ais_subset") or {}
            for name, m in a.get("methods", {}).items():
                if "steps" not in m:
                    continue
                conv = ", ".join(f"T={t}: {_fmt(v)}" for t, v in m.get("convergence", {}).items())
                ch = a["methods"].get(b.get("method"), {}).get("nll_per_sentence")
                L += ["", f"AIS (`{name}`, prior {b.get('prior', '')}) on a fixed random {a.get('sentences')} of "
                          f"those {a.get('of')} sentences, {m.get('k')} chains: {conv} (ESS mean "
                          f"{_fmt(m.get('ess_mean'), 1)}); the tightest bound's method `{b.get('method')}` on the "
                          f"same sentences: {_fmt(ch)}."]
        if any(k == "melbo" for k, _ in bounds):
            L += ["", "The MELBO (paper eqn 16) uses the test set's own aggregated posterior as its prior: it is "
                      "reported because the paper's tables use it, and it is **not** a held-out likelihood. The "
                      "ELBO and IWAE rows are held-out bounds."]
    conv = rep.get("conventions")
    if conv:
        L += ["", "Perplexity conventions: " + "; ".join(f"`{k}` = {v}" for k, v in conv.items()) + "."]
    lat = rep.get("latent")
    if lat:
        L += ["", f"Latent ({lat.get('dim')}-d): MI estimate {_fmt(lat.get('mutual_information'))} nats "
                  f"({lat.get('mutual_information_what', '')}); active units {lat.get('active_units')}/{lat.get('dim')} "
                  f"({lat.get('active_units_what', '')}).", ""]
    for b in rep.get("bleu_modes") or ([dict(rep["bleu"])] if rep.get("bleu") else []):
        L.append(f"- BLEU, {b.get('what', '')}: sentence BLEU-1 (the paper's, averaged) {_fmt(b.get('sentence_bleu1'), 4)}, "
                 f"corpus BLEU-1 {_fmt(b.get('corpus_bleu1'), 4)}, corpus BLEU-4 {_fmt(b.get('corpus_bleu4'), 4)}")
    return L


def model_card(model_dir: str | Path, run_dir: str | Path | None = None, eval_json: str | Path | None = None,
               data_dir: str | None = None, name: str | None = None, repo_id: str | None = None) -> str:
    """The text of README.md for `model_dir` (see the module docstring)."""
    d = Path(model_dir)
    cfg = _read_json(d / "config.json")
    if cfg is None or "model" not in cfg:
        raise UserError(f"{d}: no model config.json (export the model first)")
    mc, tc = cfg["model"], cfg.get("train", {}) or {}
    run = Path(run_dir) if run_dir else None
    if run is None and cfg.get("exported_from"):
        src = Path(cfg["exported_from"])
        run = src.parent if src.suffix == ".pt" else src
        run = run if run.is_dir() else None
    name = name or d.name
    objective = tc.get("objective")
    load_as = repo_id or str(d)
    corpus = tc.get("corpus")
    tags = ["sentencemim", "sentence-autoencoder", "latent-variable-model"] + ([objective] if objective else [])
    L = ["---", "library_name: sentencemim", "tags:"] + [f"- {t}" for t in tags] + ["---", "",
         f"# {name}", "",
         f"A sentence-level latent variable model: a GRU sentence auto-encoder as in SentenceMIM (Livne, Swersky & "
         f"Fleet, 2020), trained as **{OBJECTIVES.get(objective, objective or 'unknown objective')}**. Made with "
         f"sentencemim; the model is config.json + model.safetensors + vocab.json.", "",
         "```python", "from sentencemim import SentenceMIM", f'm = SentenceMIM.from_pretrained("{load_as}")',
         'mean, std = m.encode(["there was no panic"])   # posterior q(z|x) = N(mean, std^2)',
         'print(m.reconstruct(["there was no panic"]), m.sample(3, std=0.1, seed=0))', "```", "",
         "## Model", "", "| | |", "|---|---|",
         f"| objective | `{objective}` |",
         f"| vocabulary | {mc.get('vocab_size')} entries (4 specials: <pad> <unk> <sos> <eos>) |",
         f"| embedding / hidden / latent size | {mc.get('embedding_dim')} / {mc.get('hidden_dim')} / {mc.get('latent_dim')} |",
         f"| GRU layers | {mc.get('num_layers')} |"]
    n_params = safetensors_parameters(d / "model.safetensors")
    if n_params is not None:
        L.append(f"| parameters | {n_params:,} |")
    if "logvar_floor" in mc:
        L.append(f"| posterior log-variance floor | {mc['logvar_floor']} (std >= exp({mc['logvar_floor'] / 2:g})) |")
    L.append(f"| dropout | decoder embeddings {mc.get('embedding_dropout')}, word dropout {mc.get('word_dropout')}, "
             f"encoder <unk> rate {mc.get('encoder_unk_rate')} |")

    L += ["", "## Training data", ""]
    if corpus is None:
        L.append("The training corpus is not recorded in config.json.")
    else:
        files, why = corpus_files(corpus, data_dir or tc.get("data_dir"))
        L.append(f"Corpus `{corpus}`, whitespace-tokenised, one sentence a line.")
        if files:
            L += ["sha256 of the files found when this card was written:", "",
                  "| split | file | sha256 | lines |", "|---|---|---|---|"]
            for split, paths in files.items():
                for p in paths:
                    with open(p, "rb") as f:
                        lines = sum(1 for _ in f)
                    L.append(f"| {split} | `{p.name}` | `{sha256(p)}` | {lines} |")
        else:
            L.append(f"Its files were not available when this card was written, so no sha256 is given ({why}).")
        if tc.get("max_length"):
            L.append(f"Training sentences longer than {tc['max_length']} words: {tc.get('length_policy')}.")

    L += ["", "## Training", ""]
    records = _metrics(run)
    starts = [r for r in records if r.get("kind") == "event" and r.get("event") in ("start", "resume")]
    sessions = (_read_json(run / "reproduce.json") or {}).get("sessions", []) if run else []
    recorded = [(r.get("command"), r.get("commit")) for r in starts if r.get("command")] or \
               [(s.get("command"), s.get("commit")) for s in sessions if s.get("command")]
    if recorded:
        for i, (command, commit) in enumerate(recorded):
            label = "command" if i == 0 else f"resumed ({i})"
            L.append(f"- {label}: `{command}` at code commit `{commit or 'unknown'}`")
    else:
        L.append(f"- command: not recorded by the run; an equivalent command rebuilt from config.json: "
                 f"`{equivalent_command(mc, tc)}`")
    step = cfg.get("step")
    valid = [r for r in records if r.get("kind") == "valid"]
    at_step = [r for r in valid if r.get("step") == step]
    epoch = f", epoch {at_step[-1]['epoch']}" if at_step and "epoch" in at_step[-1] else ""
    L.append(f"- steps: {step if step is not None else 'unknown'}{epoch} (batch size {tc.get('batch_size', '?')})")
    if at_step:
        v = at_step[-1]
        L.append(f"- validation at that step ({v.get('sentences')} sentences): loss {_fmt(v.get('loss'))}, "
                 f"reconstruction -log p(x|z) {_fmt(v.get('rec_per_sentence'))} nats/sentence (z ~ q(z|x), "
                 f"words + <eos>), KL {_fmt(v.get('kl_per_sentence'))}"
                 + (f", active units {v['active_units']}/{v.get('latent_dim')}" if "active_units" in v else ""))
    L += _training_end(records, valid)
    if tc:
        L.append(f"- optimiser: {tc.get('optimizer')} lr {tc.get('lr')}, gradient-norm clip {tc.get('clip')}, "
                 f"lr x{tc.get('lr_decay')} after {tc.get('patience')} epoch(s) without validation improvement, "
                 f"seed {tc.get('seed')}")
        if objective == "vae":
            L.append(f"- KL annealing: {tc.get('kl_annealing')} ({tc.get('kl_anneal_steps')} steps)")
    if cfg.get("exported_from"):
        L.append(f"- exported from `{cfg['exported_from']}`")

    L += ["", "## Test numbers", ""]
    candidates = [Path(eval_json)] if eval_json else [p / "eval-test.json" for p in (d, run) if p is not None]
    found = next((p for p in candidates if p.is_file()), None)
    if eval_json and found is None:
        raise UserError(f"{eval_json}: no such evaluation report")
    rep = _read_json(found) if found else None
    source = f"`{found.name}` (`smim evaluate`)" if found else ""
    if rep is None and run is not None:  # smim reproduce's evaluation of the run, if of this step
        analysis = _read_json(run / "analysis.json")
        if analysis and isinstance(analysis.get("report"), dict):
            if analysis.get("step") == step:
                rep = {"split": (analysis.get("settings") or {}).get("split"), "corpus": analysis.get("corpus"),
                       **analysis["report"]}
                source = (f"`analysis.json` (`smim reproduce`'s evaluation of checkpoint-{analysis.get('checkpoint', '?')}"
                          + (f", at code commit `{analysis['commit']}`" if analysis.get("commit") else "")
                          + (f", {analysis['evaluated']}" if analysis.get("evaluated") else "") + ")")
            else:
                L.append(f"The run's analysis.json evaluates step {analysis.get('step')}, not the exported step "
                         f"{step}: not used.")
    key = (_read_json(run / "analysis-stages" / "key.json") if run is not None and not rep else None) or {}
    if rep:
        L += _test_section(rep, source)
    elif key and key.get("step") == step:  # an evaluation of this step, started and not finished
        from .eval.stages import kept_stages
        done = kept_stages(run / "analysis-stages")
        L.append(f"An evaluation of this step on the {(key.get('settings') or {}).get('split', '?')} split "
                 f"(`smim reproduce`) was started and had not finished when this card was written ({len(done)} "
                 "stage(s) kept: still running, or stopped and resumable): no test numbers yet. Export again when "
                 "`analysis.json` is written.")
    else:
        L.append("No test evaluation was found beside the model (`smim evaluate RUN --json RUN/eval-test.json`, "
                 "or `smim train ... --evaluate`, writes one; export again afterwards).")
    return "\n".join(_escape(L)) + "\n"


def _escape(lines: list[str]) -> list[str]:
    """'<' outside code spans and blocks as &lt;, so that <eos>, <unk> ... are shown,
    not taken for HTML tags by Markdown renderers (the Hub's among them)."""
    out, in_code = [], False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        if in_code or line.startswith("```"):
            out.append(line)
            continue
        parts = line.split("`")
        out.append("`".join(p.replace("<", "&lt;") if i % 2 == 0 else p for i, p in enumerate(parts)))
    return out


def write_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Write model_dir/README.md (replacing an existing one); returns its path."""
    text = model_card(model_dir, **kwargs)
    path = Path(model_dir) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
