"""Dataclass configs: the single source of truth for every setting.

The same names are used in Python, on the command line (`--latent-dim` is
`latent_dim`) and in saved JSON. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import UserError

OBJECTIVES = ("mim", "vae", "ae", "lm")  # lm: the decoder alone, latent_dim 0
ANNEALING = ("none", "linear", "logistic")
PRECISIONS = ("fp32", "bf16")  # evaluation decoder scoring (sentencemim.scoring)


@dataclass
class ModelConfig:
    """Architecture of the sentence auto-encoder (Bowman et al. 2015, paper sec. 2.1)."""

    vocab_size: int = 0  # set from the vocabulary
    embedding_dim: int = 300  # PTB 300; larger corpora 512
    hidden_dim: int = 512  # PTB 512; larger corpora 1024
    latent_dim: int = 16  # 0 = no latent: the GRU language model (objective lm)
    num_layers: int = 1
    embedding_dropout: float = 0.5  # on decoder input embeddings
    word_dropout: float = 0.0  # decoder inputs replaced by <unk> (training only)
    encoder_unk_rate: float = 0.0  # encoder inputs replaced by <unk> (paper's QA model: 0.2)
    logvar_floor: float = -10.0  # posterior log-variance clamp (std >= e^-5 at -10)
    pad_id: int = 0
    unk_id: int = 1
    sos_id: int = 2
    eos_id: int = 3

    def validate(self, check_vocab: bool = True) -> None:
        for name in (("vocab_size",) if check_vocab else ()) + ("embedding_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.latent_dim < 0:
            raise UserError(f"latent_dim must be >= 0 (0 = the language model, no latent), got {self.latent_dim}")
        for name in ("embedding_dropout", "word_dropout", "encoder_unk_rate"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {v}")


@dataclass
class TrainConfig:
    """Optimisation and run settings. Defaults are the paper's PTB settings."""

    corpus: str = "ptb"
    data_dir: str | None = None
    objective: str = "mim"
    batch_size: int = 20
    optimizer: str = "adam"  # adam (PTB) | sgd (larger corpora)
    lr: float = 1e-3
    clip: float = 0.25  # L2 gradient-norm clipping; 0 disables
    lr_decay: float = 0.25  # lr multiplied by this after `patience` epochs without improvement
    patience: int = 2  # PTB 2, others 1
    min_lr: float = 1e-6  # stop when lr falls below
    max_epochs: int = 100
    max_steps: int = 0  # 0 = no limit
    eval_every: int = 0  # validate every N steps as well as every epoch (0 = per epoch only)
    eval_max_sentences: int = 0  # cap validation set size for speed (0 = all)
    kl_annealing: str = "none"  # vae only: none | linear | logistic
    kl_anneal_steps: int = 10000  # linear: steps 0->1; logistic: midpoint
    kl_logistic_k: float = 0.0025
    max_length: int = 0  # in words; 0 = no limit
    length_policy: str = "drop"  # drop | truncate (sentences longer than max_length)
    min_count: int = 1
    max_vocab: int = 0  # 0 = no cap
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000  # steps between checkpoint-latest.pt writes (also each epoch and on stop)
    nan_policy: str = "stop"  # stop | skip
    device: str = "auto"
    tensorboard: bool = False  # also log to RUN/tensorboard/ (extra `tensorboard`)

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.kl_annealing not in ANNEALING:
            raise UserError(f"unknown kl_annealing {self.kl_annealing!r}; choose one of {', '.join(ANNEALING)}")
        if self.optimizer not in ("adam", "sgd"):
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")
        if self.length_policy not in ("drop", "truncate"):
            raise UserError(f"unknown length_policy {self.length_policy!r}; choose drop or truncate")
        if self.nan_policy not in ("stop", "skip"):
            raise UserError(f"unknown nan_policy {self.nan_policy!r}; choose stop or skip")
        for name in ("batch_size", "max_epochs", "patience", "log_every", "kl_anneal_steps", "min_count",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "eval_max_sentences", "max_length", "max_vocab"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.clip < 0 or not 0 < self.lr_decay <= 1:
            raise UserError("lr must be > 0, clip >= 0 and lr_decay in (0, 1]")


# The paper's settings for Yahoo, Yelp15 and WikiText-103 (sec. 4.2).
PRESETS = {
    "ptb": dict(model=dict(embedding_dim=300, hidden_dim=512),
                train=dict(optimizer="adam", lr=1e-3, clip=0.25, patience=2)),
    "large": dict(model=dict(embedding_dim=512, hidden_dim=1024),
                  train=dict(optimizer="sgd", lr=5.0, clip=0.25, patience=1)),
}


def from_dict(cls, data: dict):
    """Build a dataclass from a dict; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    return cls(**data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
