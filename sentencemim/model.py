"""The sentence auto-encoder of SentenceMIM (Livne, Swersky & Fleet 2020), one file.

Architecture (Bowman et al. 2015; paper sec. 2.1, Figs. 1-2):

    embedding E (shared by encoder and decoder, not tied to the output layer)
    encoder   GRU over  wn ... w1 <sos>   ->  last hidden h      (never sees <eos>)
    posterior q(z|x) = N(mu(h), diag exp(logvar(h))), logvar clamped at `logvar_floor`
    decoder   h0 = W z;  GRU over [dropout(E(<sos> w1..wn)) ; z]  ->  softmax over V
              target  w1 ... wn <eos>                                    (eqn 1)

Objectives (one model; the objective is a config value), per sentence x_i:

    mim  (A-MIM, Algorithm 1 / eqn 14):  -log p(x|z) - 1/2 (log q(z|x) + log N(z; 0, I)),  z ~ q(z|x)
    vae  (ELBO, eqn 11):                  -log p(x|z) + beta * KL(q(z|x) || N(0, I)),        z ~ q(z|x)
    ae   (deterministic):                 -log p(x|z),                                       z = mu
    lm   (no latent, latent_dim = 0):     -log p(x)  -- the same decoder with no z input and a
                                          zero initial state: a GRU language model whose NLL is
                                          exact, the reference every held-out bound is read against

Token log-probabilities are summed within a sentence (including <eos>), the loss
is averaged over sentences, and the latent terms are per sentence (not scaled by
length). The length prior p(T) of eqn 2 is not modelled: length is carried by
the <eos> probability, as in the authors' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

LOG_2PI = math.log(2 * math.pi)


def log_normal(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def log_std_normal(z):
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z ** 2).sum(-1)


def kl_std_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), analytic, summed over the last dimension."""
    return 0.5 * (torch.exp(logvar) + mu ** 2 - 1.0 - logvar).sum(-1)


@dataclass
class Output:
    """Named per-sentence terms of one forward pass (all shape (B,), nats)."""

    loss: torch.Tensor  # scalar: mean over sentences of the objective
    rec: torch.Tensor  # -log p(x|z), words + <eos>
    rec_eos: torch.Tensor  # the <eos> term of rec (for the paper's PPL convention)
    kl: torch.Tensor  # KL(q(z|x) || N(0,I)), analytic
    log_q: torch.Tensor  # log q(z|x) at the sampled z
    log_p: torch.Tensor  # log N(z; 0, I) at the sampled z
    tokens: torch.Tensor  # words + 1 (<eos>)
    z: torch.Tensor  # (B, d)
    mu: torch.Tensor  # (B, d)
    logvar: torch.Tensor  # (B, d)


class SentenceAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        E, H, D, L = cfg.embedding_dim, cfg.hidden_dim, cfg.latent_dim, cfg.num_layers
        self.embedding = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_id)
        if D:  # latent_dim 0 is the plain language model: no encoder, no z
            self.encoder = nn.GRU(E, H, num_layers=L, batch_first=True)
            self.to_mu = nn.Linear(H, D)
            self.to_logvar = nn.Linear(H, D)
            self.z_to_hidden = nn.Linear(D, H * L)
        self.decoder = nn.GRU(E + D, H, num_layers=L, batch_first=True)
        self.out = nn.Linear(H, cfg.vocab_size)
        self.emb_dropout = nn.Dropout(cfg.embedding_dropout)

    # ------------------------------------------------------------------ encoder
    def _replace_with_unk(self, tokens, rate):
        """Training-time token dropout: replace a share `rate` of real tokens by <unk>."""
        if not self.training or rate <= 0:
            return tokens
        mask = (torch.rand(tokens.shape, device=tokens.device) < rate) & (tokens != self.cfg.pad_id)
        mask &= tokens != self.cfg.sos_id
        return tokens.masked_fill(mask, self.cfg.unk_id)

    def encode(self, enc_in, lengths):
        """q(z|x): (mu, logvar), each (B, d). enc_in is the reversed sentence + <sos>."""
        if not self.has_latent:
            raise ValueError("this model is a language model (latent_dim 0): it has no encoder")
        enc_in = self._replace_with_unk(enc_in, self.cfg.encoder_unk_rate)
        out, _ = self.encoder(self.embedding(enc_in))  # (B, T, H)
        # a GRU is causal, so the output at position len-1 is the last hidden state of
        # the top layer for that sentence; right padding never reaches it
        last = out[torch.arange(out.shape[0], device=out.device), lengths - 1]  # (B, H)
        mu = self.to_mu(last)
        logvar = self.to_logvar(last).clamp(min=self.cfg.logvar_floor)
        return mu, logvar

    @property
    def has_latent(self) -> bool:
        return self.cfg.latent_dim > 0

    @staticmethod
    def reparameterize(mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    # ------------------------------------------------------------------ decoder
    def init_hidden(self, z):
        """(num_layers, B, H) initial decoder state from z (zeros for the language model,
        whose z is (B, 0))."""
        L, H = self.cfg.num_layers, self.cfg.hidden_dim
        if not self.has_latent:
            return z.new_zeros(L, z.shape[0], H)
        return self.z_to_hidden(z).view(z.shape[0], L, H).transpose(0, 1).contiguous()

    def decoder_step(self, tokens, z, hidden):
        """Run the decoder over `tokens` (B, T) given z (B, d); returns (B, T, H), hidden."""
        emb = self.emb_dropout(self.embedding(tokens))  # (B, T, E)
        inp = torch.cat([emb, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)
        return self.decoder(inp, hidden)

    def token_nll(self, dec_in, dec_tgt, lengths, z):
        """-log p(x|z) per sentence (B,), and the <eos> term (B,)."""
        dec_in = self._replace_with_unk(dec_in, self.cfg.word_dropout)
        states, _ = self.decoder_step(dec_in, z, self.init_hidden(z))  # (B, T, H)
        real = dec_tgt != self.cfg.pad_id  # (B, T)
        # project only the real (non-pad) positions onto the vocabulary
        logits = self.out(states[real])  # (N_tok, V)
        nll = F.cross_entropy(logits, dec_tgt[real], reduction="none")  # (N_tok,)
        sent = torch.arange(dec_tgt.shape[0], device=z.device).unsqueeze(1).expand_as(dec_tgt)[real]
        rec = torch.zeros(dec_tgt.shape[0], device=z.device, dtype=nll.dtype).index_add_(0, sent, nll)
        is_eos = dec_tgt[real] == self.cfg.eos_id
        rec_eos = torch.zeros_like(rec).index_add_(0, sent[is_eos], nll[is_eos])
        return rec, rec_eos

    def logits(self, dec_in, z, hidden=None):
        """Full (B, T, V) logits; for decoding and analysis."""
        if hidden is None:
            hidden = self.init_hidden(z)
        states, hidden = self.decoder_step(dec_in, z, hidden)
        return self.out(states), hidden

    # ------------------------------------------------------------------ objectives
    def forward(self, batch, objective: str = "mim", beta: float = 1.0, sample: bool | None = None) -> Output:
        """One pass over a `data.Batch`. `sample` overrides whether z is sampled
        (default: sampled for mim/vae, the mean for ae)."""
        if objective == "lm" or not self.has_latent:
            if objective != "lm" or self.has_latent:
                raise ValueError(f"objective {objective!r} needs latent_dim > 0 and objective 'lm' needs "
                                 f"latent_dim 0 (got {self.cfg.latent_dim})")
            B = batch.lengths.shape[0]
            none = self.embedding.weight.new_zeros(B, 0)  # (B, 0): no latent code
            rec, rec_eos = self.token_nll(batch.dec_in, batch.dec_tgt, batch.lengths, none)
            zero = torch.zeros_like(rec)
            return Output(rec.mean(), rec, rec_eos, zero, zero, zero, batch.lengths, none, none, none)
        mu, logvar = self.encode(batch.enc_in, batch.lengths)
        if sample is None:
            sample = objective != "ae"
        z = self.reparameterize(mu, logvar) if sample else mu
        rec, rec_eos = self.token_nll(batch.dec_in, batch.dec_tgt, batch.lengths, z)
        log_q = log_normal(z, mu, logvar)
        log_p = log_std_normal(z)
        kl = kl_std_normal(mu, logvar)
        if objective == "mim":  # Algorithm 1: -log p(x|z) - 1/2 (log q(z|x) + log P(z))
            per_sentence = rec - 0.5 * (log_q + log_p)
        elif objective == "vae":  # negative ELBO with KL weight beta (eqn 11)
            per_sentence = rec + beta * kl
        elif objective == "ae":
            per_sentence = rec
        else:
            raise ValueError(f"unknown objective {objective!r}")
        return Output(per_sentence.mean(), rec, rec_eos, kl, log_q, log_p,
                      batch.lengths, z, mu, logvar)


def kl_weight(step: int, schedule: str, steps: int, k: float = 0.0025) -> float:
    """sVAE KL annealing: beta at a training step. 'logistic' follows the authors'
    demo, 1 / (1 + exp(-k (step - steps))) with midpoint `steps`."""
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        return min(1.0, step / steps)
    if schedule == "logistic":
        return float(1.0 / (1.0 + math.exp(-k * (step - steps))))
    raise ValueError(f"unknown kl annealing {schedule!r}")
