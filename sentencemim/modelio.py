"""Model files. Two artifacts:

  * inference directory (Hugging Face layout): config.json + model.safetensors + vocab.json
  * training run directory: checkpoint-{best,latest}.pt + vocab.json (see train.py)

`load_model(path)` accepts either, or a checkpoint file itself. Nothing is unpickled:
safetensors + JSON, and checkpoints through torch.load(weights_only=True).
`export(run, out)` turns a training checkpoint into an inference directory.

config.json of an inference directory:
    {"format": "sentencemim-model-1", "model": {ModelConfig fields},
     "train": {TrainConfig fields, if known}, "step": N, "exported_from": "..."}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import checkpoint
from .config import ModelConfig, from_dict, to_dict
from .errors import UserError
from .model import SentenceAE
from .rundir import check_run_config, sha256, write_atomic
from .vocab import Vocab

CONFIG_FORMAT = "sentencemim-model-1"


def save_pretrained(model: SentenceAE, vocab: Vocab, directory: str | Path, extra: dict | None = None) -> Path:
    """Write config.json + model.safetensors + vocab.json into `directory`
    (created if needed; existing model files there are replaced)."""
    from safetensors.torch import save_file
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise UserError(f"{d}: exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    vocab_text = json.dumps(vocab.to_json(), ensure_ascii=False)
    cfg = {"format": CONFIG_FORMAT, "model": to_dict(model.cfg), **(extra or {}),
           "vocab_sha256": hashlib.sha256(vocab_text.encode("utf-8")).hexdigest()}
    tmp = d / ".model.safetensors.tmp"
    try:  # each file through a temporary name: a full disk leaves the old files or none, never torn ones
        save_file(state, str(tmp), metadata={"format": CONFIG_FORMAT})
        os.replace(tmp, d / "model.safetensors")
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or "No space" in str(e) or "os error 28" in str(e):
            raise UserError(f"{d / 'model.safetensors'}: cannot write ({' '.join(str(e).split())})") from None
        raise
    write_atomic(d / "vocab.json", vocab_text)
    write_atomic(d / "config.json", json.dumps(cfg, indent=2))
    return d


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing (a model directory holds config.json, model.safetensors, vocab.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _recorded_vocab(run_dir: Path) -> str | None:
    """The sha256 of vocab.json recorded in a run's fingerprints.json (None: not recorded)."""
    try:
        return json.loads((run_dir / "fingerprints.json").read_text(encoding="utf-8")).get("vocab.json")
    except (OSError, ValueError, AttributeError):
        return None


def _check_vocab(path: Path, recorded: str | None, where: str) -> None:
    """A vocab.json swapped for another (even of the same size) does not pass silently."""
    if recorded and sha256(path) != recorded:
        raise UserError(f"{path}: not the vocabulary this model was trained with (its sha256 differs from the "
                        f"one recorded in {where}); restore the original vocab.json")


def _build(model_cfg: dict, state: dict, vocab: Vocab, source: str) -> SentenceAE:
    mc = from_dict(ModelConfig, model_cfg, f"{source}: model.")
    mc.validate(source=f"{source}: model.")
    if mc.vocab_size != len(vocab):
        raise UserError(f"{source}: the model expects a vocabulary of {mc.vocab_size} entries but "
                        f"vocab.json has {len(vocab)}; they do not belong together")
    model = SentenceAE(mc)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{source}: weights do not match config.json ({str(e).splitlines()[0]})") from None
    model.eval()
    return model


def load_model(path: str | Path, which: str = "best", device="cpu") -> tuple[SentenceAE, Vocab, dict]:
    """Load (model, vocab, info) from an inference directory, a run directory
    (checkpoint-`which`.pt) or a checkpoint file. info holds the train config if known."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model directory or checkpoint")
    if path.is_dir() and (path / "model.safetensors").exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        cfg = _read_json(path / "config.json")
        if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT or "model" not in cfg:
            raise UserError(f"{path / 'config.json'}: not a sentencemim model config")
        if cfg.get("train"):  # the training settings travel along (evaluate reads the corpus from them)
            from .config import TrainConfig
            from_dict(TrainConfig, cfg["train"], f"{path / 'config.json'}: train.")
        vocab = Vocab.load(path / "vocab.json")
        try:
            state = load_file(str(path / "model.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path / 'model.safetensors'}: unreadable (truncated or corrupt?): {e}") from None
        model = _build(cfg["model"], state, vocab, str(path / "config.json"))
        _check_vocab(path / "vocab.json", cfg.get("vocab_sha256"), f"{path / 'config.json'}")
        return model.to(device), vocab, {k: v for k, v in cfg.items() if k not in ("format", "model", "vocab_sha256")}
    if path.is_dir():
        ckpt = path / f"checkpoint-{which}.pt"
        if not ckpt.exists() and which == "best":
            ckpt = path / "checkpoint-latest.pt"
        if not ckpt.exists():
            raise UserError(f"{path}: neither a model directory (model.safetensors) nor a run directory "
                            f"(checkpoint-{which}.pt)")
        run_dir = path
    else:
        ckpt, run_dir = path, path.parent
    if (run_dir / "checkpoint-latest.pt").exists() or (run_dir / "checkpoint-best.pt").exists():
        check_run_config(run_dir)  # a run directory: its config.json, if edited, must still be valid
    state = checkpoint.load(ckpt)
    vocab = Vocab.load(run_dir / "vocab.json")
    model = _build(state["model_config"], state["model"], vocab, str(ckpt))
    _check_vocab(run_dir / "vocab.json", _recorded_vocab(run_dir), f"{run_dir / 'fingerprints.json'}")
    info = {"train": state.get("train_config", {}), "step": state.get("state", {}).get("step"),
            "checkpoint": str(ckpt)}
    return model.to(device), vocab, info


def export(run: str | Path, out: str | Path, which: str = "best", overwrite: bool = False,
           card: bool = True) -> Path:
    """A run directory or checkpoint file -> an inference directory at `out`, with a
    model card (README.md, sentencemim.modelcard) unless `card` is False.
    The training config and step travel along in config.json (evaluate needs the corpus)."""
    out = Path(out)
    if (out / "model.safetensors").exists() and not overwrite:
        raise UserError(f"{out}: already holds a model (pass --force to replace it)")
    if (out / "checkpoint-latest.pt").exists() or (out / "checkpoint-best.pt").exists():
        raise UserError(f"{out}: is a training run directory; export into a new directory")
    model, vocab, info = load_model(run, which)
    extra = {"train": info.get("train", {}), "step": info.get("step"),
             "exported_from": info.get("checkpoint", str(run))}
    save_pretrained(model, vocab, out, extra)
    if card:  # README.md: objective, sizes, corpus sha256, command, steps, test numbers
        from .modelcard import write_model_card
        run = Path(run)
        write_model_card(out, run_dir=run if run.is_dir() else run.parent)
    return out
