"""Dataclass configs: the single source of truth for every setting.

The same names are used in Python, on the command line (`--latent-dim` is
`latent_dim`) and in saved JSON. Each field carries its help text, its choices and
its valid range in `field(metadata=...)`; `--help`, the command-line parsers, the
checks of saved JSON (`from_dict`) and `validate()` all read them from there.
Unknown keys, wrong types, NaN / infinite numbers and out-of-range values are
errors, never ignored. This module imports no torch (`smim --help` stays fast).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .errors import UserError

OBJECTIVES = ("mim", "vae", "ae", "lm")  # lm: the decoder alone, latent_dim 0
ANNEALING = ("none", "linear", "logistic")
PRECISIONS = ("fp32", "bf16")  # evaluation decoder scoring (sentencemim.eval.scoring)
OPTIMIZERS = ("adam", "sgd")
SPLITS = ("train", "valid", "test")
DEVICE_HELP = "auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N"
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
SEED_MAX = 2 ** 63 - 1


def _f(default, help: str, *, choices=None, ge=None, gt=None, le=None, lt=None, device=False, hidden=False):
    """A config field with its help text, choices and range (read by the CLI and the checks)."""
    return field(default=default, metadata={"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le,
                                            "lt": lt, "device": device, "hidden": hidden})


def _kind(f) -> str:
    """'int', 'float', 'bool' or 'str' from a field's annotation (strings under PEP 563)."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.split("|")[0].strip()


def _optional(f) -> bool:
    return "None" in str(f.type)


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def range_text(f) -> str:
    """The valid range of a numeric field in words: 'a positive integer', 'in [0, 1)', ..."""
    m = f.metadata
    lo = ("[", m["ge"]) if m.get("ge") is not None else ("(", m["gt"]) if m.get("gt") is not None else None
    hi = ("]", m["le"]) if m.get("le") is not None else (")", m["lt"]) if m.get("lt") is not None else None
    if _kind(f) == "int" and lo == ("[", 1) and hi is None:
        return "a positive integer"
    if _kind(f) == "int" and lo == ("[", 0) and hi in (None, ("]", SEED_MAX)):
        return "an integer >= 0"
    if lo and hi:
        return f"in {lo[0]}{_fmt(lo[1])}, {_fmt(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {_fmt(lo[1])}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {_fmt(hi[1])}"
    return "a finite number" if _kind(f) == "float" else "an integer"


def problem(f, value) -> str | None:
    """What is wrong with `value` for field `f` ('must be ..., got ...'), or None if it is valid.
    Types are strict (saved JSON): a string is not a number, a bool is not an integer."""
    m, kind = f.metadata, _kind(f)
    if value is None:
        return None if _optional(f) else "must be set, got null"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r} ({type(value).__name__})"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r} ({type(value).__name__})"
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
    elif kind == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
    elif not isinstance(value, str):
        return f"must be a string, got {value!r} ({type(value).__name__})"
    if m.get("choices") and value not in m["choices"]:
        return f"must be one of {', '.join(m['choices'])}; got {value!r}"
    if m.get("device") and not DEVICE_RE.fullmatch(value):
        return f"must be {DEVICE_HELP}; got {value!r}"
    if kind in ("int", "float"):
        bad = ((m.get("ge") is not None and value < m["ge"]) or (m.get("gt") is not None and value <= m["gt"])
               or (m.get("le") is not None and value > m["le"]) or (m.get("lt") is not None and value >= m["lt"]))
        if bad:
            return f"must be {range_text(f)}, got {value}"
    return None


def check(cfg, source: str = "") -> None:
    """Raise a UserError naming `source` and the key for the first invalid field of `cfg`."""
    for f in dataclasses.fields(cfg):
        p = problem(f, getattr(cfg, f.name))
        if p:
            raise UserError(f"{source}{f.name} {p}")


@dataclass
class ModelConfig:
    """Architecture of the sentence auto-encoder (Bowman et al. 2015, paper sec. 2.1)."""

    vocab_size: int = _f(0, "set from the vocabulary", ge=0, hidden=True)
    embedding_dim: int = _f(300, "word embedding size, shared by encoder and decoder (paper: PTB 300, "
                                 "larger corpora 512)", ge=1)
    hidden_dim: int = _f(512, "GRU hidden size of encoder and decoder (paper: PTB 512, larger corpora 1024)", ge=1)
    latent_dim: int = _f(16, "size of the latent code z (the paper's tables: 16, 128, 512); 0 = no latent, the "
                             "GRU language model (objective lm)", ge=0)
    num_layers: int = _f(1, "GRU layers of encoder and decoder (paper: 1)", ge=1)
    embedding_dropout: float = _f(0.5, "dropout on the decoder's input embeddings, in [0, 1)", ge=0.0, lt=1.0)
    word_dropout: float = _f(0.0, "fraction of decoder input words replaced by <unk> in training, in [0, 1)",
                             ge=0.0, lt=1.0)
    encoder_unk_rate: float = _f(0.0, "fraction of encoder input words replaced by <unk> in training, in [0, 1) "
                                      "(the paper's QA model: 0.2)", ge=0.0, lt=1.0)
    logvar_floor: float = _f(-10.0, "lower clamp of the posterior log-variance (-10: std >= e^-5)")
    pad_id: int = _f(0, "id of <pad>", ge=0, hidden=True)
    unk_id: int = _f(1, "id of <unk>", ge=0, hidden=True)
    sos_id: int = _f(2, "id of <sos>", ge=0, hidden=True)
    eos_id: int = _f(3, "id of <eos>", ge=0, hidden=True)

    def validate(self, check_vocab: bool = True, source: str = "") -> None:
        check(self, source)
        if check_vocab and self.vocab_size < 1:
            raise UserError(f"{source}vocab_size must be a positive integer, got {self.vocab_size}")


@dataclass
class TrainConfig:
    """Optimisation and run settings. Defaults are the paper's PTB settings."""

    corpus: str = _f("ptb", "a corpus name (ptb, wikitext-2, wikitext-103, yahoo, yelp15, everything, synthetic) "
                            "or a folder holding train.txt, valid.txt, test.txt")
    data_dir: str | None = _f(None, "folder holding the named corpora (DIR/ptb/train.txt, ...); the offline "
                                    "switch: files found there are used, nothing is downloaded "
                                    "(default: $SENTENCEMIM_DATA, else ~/.cache/sentencemim)")
    objective: str = _f("mim", "training objective: mim = A-MIM (sMIM), vae = ELBO (sVAE), ae = auto-encoder, "
                               "lm = the GRU language model (the decoder alone, latent_dim 0)", choices=OBJECTIVES)
    batch_size: int = _f(20, "sentences per training batch (paper: 20)", ge=1)
    optimizer: str = _f("adam", "adam (paper: PTB) or sgd (paper: larger corpora)", choices=OPTIMIZERS)
    lr: float = _f(1e-3, "learning rate, > 0 (paper: Adam 1e-3, SGD 5.0)", gt=0.0)
    clip: float = _f(0.25, "L2 gradient-norm clipping threshold, >= 0 (0 = no clipping)", ge=0.0)
    lr_decay: float = _f(0.25, "lr multiplied by this after --patience epochs without validation improvement, "
                               "in (0, 1]", gt=0.0, le=1.0)
    patience: int = _f(2, "epochs without validation improvement before the lr decays (paper: PTB 2, others 1)",
                       ge=1)
    min_lr: float = _f(1e-6, "stop when the lr falls below this, >= 0", ge=0.0)
    max_epochs: int = _f(100, "stop after this many epochs", ge=1)
    max_steps: int = _f(0, "stop after this many optimizer steps (0 = no limit)", ge=0)
    eval_every: int = _f(0, "also validate every N steps (0 = at the end of each epoch only)", ge=0)
    eval_max_sentences: int = _f(0, "validate on a fixed random subset of this many sentences (0 = all)", ge=0)
    kl_annealing: str = _f("none", "vae only: KL weight schedule, none (weight 1), linear (0 -> 1 over "
                                   "--kl-anneal-steps) or logistic (midpoint --kl-anneal-steps)", choices=ANNEALING)
    kl_anneal_steps: int = _f(10000, "linear: steps from 0 to 1; logistic: the midpoint step", ge=1)
    kl_logistic_k: float = _f(0.0025, "slope of the logistic KL schedule, > 0", gt=0.0)
    max_length: int = _f(0, "longest training sentence in words (0 = no limit); see --length-policy", ge=0)
    length_policy: str = _f("drop", "training sentences longer than --max-length: drop them or truncate them",
                            choices=("drop", "truncate"))
    min_count: int = _f(1, "words seen fewer times in train become <unk>", ge=1)
    max_vocab: int = _f(0, "keep at most this many words besides the 4 specials (0 = no cap)", ge=0)
    seed: int = _f(0, "random seed of weights, batch order, dropout and z noise", ge=0, le=SEED_MAX)
    log_every: int = _f(50, "steps between training log records", ge=1)
    checkpoint_every: int = _f(1000, "steps between checkpoint-latest.pt writes (also each epoch and on stop)",
                               ge=1)
    nan_policy: str = _f("stop", "a non-finite loss or gradient: stop training, or skip the step and count it",
                         choices=("stop", "skip"))
    device: str = _f("auto", DEVICE_HELP, device=True)
    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN/tensorboard/ (extra `tensorboard`)")

    def validate(self, source: str = "") -> None:
        check(self, source)


# The settings a resumed run may change: they decide when it stops, how often it logs,
# validates and saves, and where it runs or finds its (fingerprinted) data, never what it learns.
RESUME_CHANGEABLE = ("max_steps", "max_epochs", "eval_every", "log_every", "checkpoint_every", "device",
                     "data_dir", "tensorboard")


@dataclass
class ReportConfig:
    """Evaluation settings of `smim report` and of `smim reproduce`'s evaluations."""

    split: str = _f("test", "split to evaluate", choices=SPLITS)
    n_z: int = _f(1, "MELBO: z samples per sentence", ge=1)
    repeats: int = _f(10, "MELBO: repeats for the mean and std (paper: 10)", ge=1)
    iwae_k: int = _f(100, "importance samples per sentence for IWAE (0 = no IWAE)", ge=0)
    agg_prior_m: int = _f(1000, "training sentences in the aggregate-posterior prior of the held-out IWAE "
                                "(0 = off)", ge=0)
    max_sentences: int = _f(0, "evaluate a fixed random subset of this many sentences (0 = the whole split)", ge=0)
    bound_sentences: int = _f(0, "importance-weighted bounds (IWAE and the held-out methods, the costly part) on a "
                                 "fixed random subset of this many of the evaluated sentences (0 = all); the MELBO, "
                                 "ELBO, reconstruction and BLEU stay on all", ge=0)
    fig3_n: int = _f(200, "sentences in the Fig. 3 cross terms (n^2 decodes), >= 2", ge=2)
    fig5_trials: int = _f(500, "random subsets per size K in Fig. 5", ge=1)
    batch_size: int = _f(100, "sentences per evaluation batch", ge=1)
    max_rows: int = _f(2048, "(sentence, sample) rows per decoder pass", ge=1)
    seed: int = _f(0, "random seed of the z samples and subsets", ge=0, le=SEED_MAX)
    device: str = _f("auto", DEVICE_HELP, device=True)
    precision: str = _f("fp32", "decoder scoring: fp32 (exact) or bf16 (approximate; only where this CPU or GPU "
                                "runs bf16 matrix products)", choices=PRECISIONS)

    def validate(self, source: str = "") -> None:
        check(self, source)
        from .runtime import resolve_device
        self.device = str(resolve_device(self.device))


# The paper's settings for Yahoo, Yelp15 and WikiText-103 (sec. 4.2).
PRESETS = {
    "ptb": dict(model=dict(embedding_dim=300, hidden_dim=512),
                train=dict(optimizer="adam", lr=1e-3, clip=0.25, patience=2)),
    "large": dict(model=dict(embedding_dim=512, hidden_dim=1024),
                  train=dict(optimizer="sgd", lr=5.0, clip=0.25, patience=1)),
}


def from_dict(cls, data, source: str = ""):
    """Build a dataclass from a dict (saved JSON); unknown keys, wrong types and invalid
    values are errors naming `source` (e.g. 'runs/x/config.json: model.') and the key."""
    if not isinstance(data, dict):
        raise UserError(f"{source.rstrip('. ')}: expected a JSON object of {cls.__name__} settings, "
                        f"got {type(data).__name__}")
    fs = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fs))
    if unknown:
        raise UserError(f"{source}unknown {cls.__name__} key(s): {', '.join(map(str, unknown))}")
    for k, v in data.items():
        p = problem(fs[k], v)
        if p:
            raise UserError(f"{source}{k} {p}")
    return cls(**data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# Held-out bounds beyond q-only IWAE (sentencemim.eval): the proposals and AIS of issue #12.
HELDOUT_METHODS = ("q", "prior", "gauss", "defensive", "fitted", "components", "ais", "ais_fitted")
AIS_METHODS = ("ais", "ais_fitted")


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{name.replace('_', '-')} expects comma-separated numbers, got {text!r}") from None
    return vals


@dataclass
class HeldoutConfig:
    """Held-out bounds beyond q-only IWAE (sentencemim.eval.heldout). K is --iwae-k."""

    heldout_methods: str = _f("q,prior,gauss,defensive,fitted,components",
                              f"comma-separated methods among {','.join(HELDOUT_METHODS)} ('' = none); the reported bound "
                              "is the one with the lowest bound on the validation sentences")
    heldout_test: str = _f("chosen", "methods run on the scored sentences: 'chosen' = the one chosen on the "
                                     "validation sentences plus q-only IWAE; 'all' = every method (for comparisons)",
                           choices=("chosen", "all"))
    heldout_valid: int = _f(100, "validation sentences on which settings and the method are chosen", ge=1)
    widen_factors: str = _f("1,3,10,30,100", "gauss: factors on q's std")
    fixed_stds: str = _f("0.03,0.1,0.3,1", "gauss: fixed stds around q's mean")
    defensive_weights: str = _f("0.5,0.8,0.95", "defensive: weights a of a r + (1 - a) P, each in (0, 1]")
    fit_steps: int = _f(20, "fitted: Adam steps per sentence", ge=1)
    fit_samples: int = _f(2, "fitted: z samples per Adam step", ge=1)
    fit_lr: float = _f(0.05, "fitted: Adam learning rate, > 0", gt=0.0)
    component_candidates: int = _f(100, "components: nearest mixture components decoded per sentence", ge=1)
    ais_steps: str = _f("20,100", "ais, ais_fitted: annealing step counts (the largest is reported, all shown for convergence)")
    ais_chains: int = _f(16, "ais: chains per sentence", ge=1)
    ais_pilot_chains: int = _f(4, "ais: extra chains that only adapt the step size", ge=0)
    ais_leapfrog: int = _f(5, "ais: leapfrog steps per HMC transition", ge=1)
    bdmc_sentences: int = _f(0, "ais: BDMC sandwich on this many sentences sampled from the model (0 = off)", ge=0)
    ais_sentences: int = _f(0, "ais, ais_fitted: run on a fixed random N of the scored sentences only, under N(0, I), "
                               "and report them beside the chosen method on the same N instead of competing in the "
                               "choice (AIS costs hundreds of IS passes; 0 = as the other methods)", ge=0)
    gradient_precision: str = _f("auto", "precision of the gradients that only steer (AIS's HMC moves, the fitted "
                                         "proposals' Adam steps): fp32 (exact) or bf16 (faster; the weights and "
                                         "Metropolis tests stay exact float32, so every bound stays valid); auto = "
                                         "bf16 where the device runs it natively", choices=("auto", *PRECISIONS))

    def validate(self) -> None:
        bad = [m for m in self.method_list() if m not in HELDOUT_METHODS]
        if bad:
            raise UserError(f"unknown held-out method(s) {', '.join(bad)}; choose among {', '.join(HELDOUT_METHODS)}")
        for name in ("heldout_valid", "fit_steps", "fit_samples", "component_candidates", "ais_chains",
                     "ais_leapfrog"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.ais_pilot_chains < 0 or self.bdmc_sentences < 0 or self.fit_lr <= 0:
            raise UserError("--ais-pilot-chains and --bdmc-sentences must be >= 0, --fit-lr > 0")
        for name in ("widen_factors", "fixed_stds", "ais_steps"):
            if any(v <= 0 for v in _floats(getattr(self, name), name)):
                raise UserError(f"--{name.replace('_', '-')} must be positive numbers")
        if any(not 0 < a <= 1 for a in _floats(self.defensive_weights, "defensive_weights")):
            raise UserError("--defensive-weights must lie in (0, 1]")
        if not self.ais_step_list() and set(AIS_METHODS) & set(self.method_list()):
            raise UserError("--ais-steps needs at least one step count")
        if self.ais_sentences:
            ais = set(AIS_METHODS) & set(self.method_list())
            if not ais:
                raise UserError(f"--ais-sentences {self.ais_sentences} needs an AIS method (ais, ais_fitted) in "
                                "--heldout-methods")
            if not set(self.method_list()) - ais:
                raise UserError("--ais-sentences sets AIS aside from the choice of the reported bound: "
                                "--heldout-methods needs a method besides ais and ais_fitted (e.g. q,gauss)")
            if self.bdmc_sentences:
                raise UserError("--bdmc-sentences runs with AIS methods in the choice; with --ais-sentences they "
                                "are set aside: use one or the other")

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.heldout_methods.split(",") if m.strip()]

    def ais_step_list(self) -> list[int]:
        return sorted({int(v) for v in _floats(self.ais_steps, "ais_steps")})
