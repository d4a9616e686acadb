"""The reproduction matrix: config file, runs (variants x latent dims x seeds), their state
and provenance (commit, machine, time)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import PRESETS, ModelConfig, TrainConfig
from ..errors import UserError

VARIANTS = {  # name -> (TrainConfig settings, label as in the paper's tables)
    "mim": ({"objective": "mim"}, "sMIM ({d})"),
    "vae": ({"objective": "vae"}, "sVAE ({d})"),
    "vae-kl": ({"objective": "vae", "kl_annealing": "logistic"}, "sVAE ({d}) + kl"),
    "ae": ({"objective": "ae"}, "AE ({d})"),
    "lm": ({"objective": "lm"}, "GRU LM"),  # no latent: planned once per seed, at latent_dim 0
}
CONFIG_KEYS = {"name", "description", "corpus", "data_dir", "preset", "runs_dir", "model", "train", "run_train",
               "run_heldout", "variants", "latent_dims", "heldout", "seeds", "exclude", "only", "external", "evaluate", "report", "latent"}


@dataclass
class Run:
    name: str  # VARIANT-D-sSEED
    variant: str
    latent_dim: int
    seed: int
    out: Path
    mc: ModelConfig | None = None
    tc: TrainConfig | None = None
    external: dict | None = None  # {"path": ..., "checkpoint": "best" | "latest"}
    preset: str | None = None

    @property
    def key(self) -> str:  # VARIANT-D, the key of the paper's numbers
        return f"{self.variant}-{self.latent_dim}"

    @property
    def label(self) -> str:
        return VARIANTS[self.variant][1].format(d=self.latent_dim)


# ---------------------------------------------------------------------- config
def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            import tomllib
            cfg = tomllib.loads(path.read_text())
        else:
            cfg = json.loads(path.read_text())
    except (ValueError, ImportError) as e:
        raise UserError(f"{path}: not a readable config ({e})") from None
    unknown = sorted(set(cfg) - CONFIG_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    for v in cfg.get("variants", []):
        if v not in VARIANTS:
            raise UserError(f"{path}: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    _check_types(cfg, path)
    if cfg.get("preset", "ptb") not in PRESETS:
        raise UserError(f"{path}: unknown preset {cfg['preset']!r}")
    cfg["_path"] = str(path)
    return cfg


_TYPES = {  # key -> (expected type(s), in words); the model/train/evaluate sections are checked field by field
    "name": (str, "a string"), "description": (str, "a string"), "corpus": (str, "a string"),
    "data_dir": ((str, type(None)), "a string or null"), "preset": (str, "a string"), "runs_dir": (str, "a string"),
    "model": (dict, "an object"), "train": (dict, "an object"), "run_train": (dict, "an object"),
    "run_heldout": (dict, "an object"),
    "evaluate": (dict, "an object"), "heldout": (dict, "an object"), "external": (dict, "an object"), "report": (dict, "an object"),
    "latent": (dict, "an object"), "variants": (list, "a list of strings"), "exclude": (list, "a list of strings"),
    "only": (list, "a list of strings"), "latent_dims": (list, "a list of positive integers"),
    "seeds": (list, "a list of integers >= 0"),
}


def _check_types(cfg: dict, path: Path) -> None:
    """Wrong types are one-line errors naming the file and key (before anything runs)."""
    from ..config import ReportConfig, from_dict
    for key, (typ, words) in _TYPES.items():
        if key in cfg and not isinstance(cfg[key], typ):
            raise UserError(f"{path}: {key} must be {words}, got {cfg[key]!r}")
    for key, ok in (("variants", lambda v: isinstance(v, str)), ("exclude", lambda v: isinstance(v, str)),
                    ("only", lambda v: isinstance(v, str)),
                    ("latent_dims", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                    ("seeds", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)):
        bad = [v for v in cfg.get(key, []) if not ok(v)]
        if bad:
            raise UserError(f"{path}: {key} must be {_TYPES[key][1]}, got {bad[0]!r}")
    from_dict(ModelConfig, cfg.get("model", {}), f"{path}: model.")
    from_dict(TrainConfig, cfg.get("train", {}), f"{path}: train.")
    for key, settings in cfg.get("run_train", {}).items():
        if not isinstance(settings, dict):
            raise UserError(f"{path}: run_train.{key} must be an object of train settings")
        from_dict(TrainConfig, settings, f"{path}: run_train.{key}.")
    from ..config import HeldoutConfig
    for key, settings in cfg.get("run_heldout", {}).items():
        if not isinstance(settings, dict):
            raise UserError(f"{path}: run_heldout.{key} must be an object of heldout settings")
        from_dict(HeldoutConfig, {**cfg.get("heldout", {}), **settings}, f"{path}: run_heldout.{key}.").validate()
    from_dict(ReportConfig, {k: v for k, v in cfg.get("evaluate", {}).items() if k != "checkpoint"},
              f"{path}: evaluate.")
    for name, ext in cfg.get("external", {}).items():
        if not isinstance(ext, dict) or not isinstance(ext.get("path"), str):
            raise UserError(f"{path}: external.{name} must be an object with a \"path\" string")


def plan(cfg: dict, only=None, overrides: dict | None = None, runs_dir=None) -> list[Run]:
    """The matrix in order (latent dim, then variant, then seed), less `exclude`, limited to
    `only` (names or VARIANT-D prefixes), with CLI overrides of the train config."""
    from ..config import from_dict
    root = Path(runs_dir or cfg.get("runs_dir", "runs/reproduce"))
    preset = PRESETS[cfg.get("preset", "ptb")]
    external = cfg.get("external", {})
    runs = []
    variants = cfg.get("variants", ["mim"])
    # the language model has no latent: one run per seed (at latent_dim 0), first, as the reference
    cells = [(0, "lm")] * ("lm" in variants) + [(d, v) for d in cfg.get("latent_dims", [16])
                                                for v in variants if v != "lm"]
    for d, v in cells:
            for s in cfg.get("seeds", [0]):
                key, name = f"{v}-{d}", f"{v}-{d}-s{s}"
                if key in cfg.get("exclude", []) or name in cfg.get("exclude", []):
                    continue
                ext = external.get(key) or external.get(name)
                per_run = cfg.get("run_train", {})  # {VARIANT-D or NAME: {train settings}}: a run's own budget
                train = {**preset["train"], **cfg.get("train", {}), **per_run.get(key, {}), **per_run.get(name, {}),
                         **VARIANTS[v][0], "seed": s,
                         "corpus": cfg.get("corpus", "ptb"), "data_dir": cfg.get("data_dir"),
                         **(overrides or {})}
                src = f"{cfg.get('_path', 'config')}: run {name}: "
                mc = from_dict(ModelConfig, {**preset["model"], **cfg.get("model", {}), "latent_dim": d}, src + "model.")
                tc = from_dict(TrainConfig, train, src + "train.")
                tc.validate()
                runs.append(Run(name, v, d, s, root / name, mc, tc, ext, cfg.get("preset", "ptb")))
    for table in ("run_train", "run_heldout"):  # a key that names no run would be ignored without a word
        stray = set(cfg.get(table, {})) - {r.name for r in runs} - {r.key for r in runs}
        if stray:
            raise UserError(f"{cfg.get('_path', 'config')}: {table}: no run named {', '.join(sorted(stray))} in "
                            f"the matrix ({', '.join(r.name for r in runs)})")
    only = only if only is not None else cfg.get("only")
    if only:
        wanted = set(only)
        unknown = wanted - {r.name for r in runs} - {r.key for r in runs}
        if unknown:
            raise UserError(f"--only: no run named {', '.join(sorted(unknown))} in the matrix "
                            f"({', '.join(r.name for r in runs)})")
        runs = [r for r in runs if r.name in wanted or r.key in wanted]
    return runs


def train_command(run: Run, resume: bool) -> str:
    """The `smim train` command line equivalent to what the driver does for `run`."""
    base_m, base_t = ModelConfig(), TrainConfig()
    pm, pt = PRESETS[run.preset]["model"], PRESETS[run.preset]["train"]
    args = ["smim", "train", "--preset", run.preset]
    for cfg, base, pre in ((run.mc, base_m, pm), (run.tc, base_t, pt)):
        for f in fields(cfg):
            v = getattr(cfg, f.name)
            if f.name in ("vocab_size", "pad_id", "unk_id", "sos_id", "eos_id"):
                continue
            if v != pre.get(f.name, getattr(base, f.name)) or f.name in ("corpus", "objective", "latent_dim", "seed"):
                if v is not None:
                    args += ["--" + f.name.replace("_", "-"), str(v)]
    args += ["--out", str(run.out)] + (["--resume"] if resume else [])
    return " ".join(args)


# ---------------------------------------------------------------------- state of a run
def train_state(run: Run) -> tuple[str, int]:
    """('new' | 'partial' | 'done' | 'external', step)."""
    from .. import checkpoint
    if run.external:
        snap = run.out / f"checkpoint-{run.external.get('checkpoint', 'best')}.pt"
        return ("external", checkpoint.load(snap)["state"]["step"]) if snap.exists() else ("external", -1)
    ck = run.out / "checkpoint-latest.pt"
    if not ck.exists():
        return "new", 0
    st = checkpoint.load(ck)["state"]
    done = st["done"] or (run.tc.max_steps and st["step"] >= run.tc.max_steps) or st["epoch"] >= run.tc.max_epochs
    return ("done" if done else "partial"), st["step"]


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def steps_per_epoch(metrics: Path, config: Path) -> int | None:
    """Optimizer steps per epoch of a started run: the training sentences that the first record
    of its metrics.jsonl (the start event) states // the batch size in its config.json; None
    before the run has written one."""
    if not metrics.exists():
        return None
    with open(metrics) as f:
        first = json.loads(f.readline() or "{}")
    bs = read_json(config, {}).get("train", {}).get("batch_size")
    return first["train_sentences"] // bs if "train_sentences" in first and bs else None


def commit() -> str:
    """The commit of the code this process runs (provenance.code_commit: read once, at its
    first use, the start of `cmd_reproduce`, because HEAD may move while a long matrix trains)."""
    from ..provenance import code_commit
    return code_commit()


def machine() -> str:
    import os
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} threads {torch.get_num_threads()}, {gpu}"


def utc(t: float | None = None) -> str:
    """t (seconds since the epoch; now when None) as 'YYYY-MM-DD HH:MM:SS UTC'."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
