"""Fast, exact -log p(x|z) for many latent codes per sentence (evaluation only).

Evaluation decodes each sentence under many codes: IWAE with K = 100 samples, the
MELBO's N_z x R samples, the n x n cross terms of Fig. 3. `SentenceAE.token_nll`
(the training path) treats every (sample, sentence) row as a new sentence; the
`Scorer` computes the same numbers with the z-independent work done once:

1. The decoder's first-layer input is [E(w_t); z], so its input projection splits:
   W_ih [e_t; z] = W_e e_t + W_z z. W_e e_t is computed once per sentence and step and
   shared by all samples; W_z z once per sample and shared by all steps.
2. The GRU recurrence is stepped here with torch.nn.GRU's equations (gate order r, z, n):
       r = s(x_r + W_hr h + b_hr),  u = s(x_z + W_hz h + b_hz)
       n = tanh(x_n + r * (W_hn h + b_hn)),  h' = (1 - u) * n + u * h
   (tests compare it with torch.nn.GRU through token_nll).
3. The vocabulary projection and log-softmax run in row chunks that stay in cache
   (a (tokens x samples) x V logit matrix is never materialised), through oneDNN on
   the CPU, which here is ~25% faster than the default sgemm for this shape.

`precision="bf16"` runs the vocabulary projection in bfloat16 (float32 accumulation
and log-softmax): about twice as fast on CPUs with AVX512-BF16, but not exact:
docs/evaluation.md states the measured deviation. The default is float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import SentenceAE

PRECISIONS = ("fp32", "bf16")


class Scorer:
    """Reads the weights of an eval-mode `SentenceAE`; call it again if they change."""

    def __init__(self, model: SentenceAE, precision: str = "fp32", chunk: int = 256):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.model, self.cfg, self.chunk, self.precision = model, model.cfg, chunk, precision
        gru, E = model.decoder, model.cfg.embedding_dim
        self.layers = []  # per layer: (w_ih, b_ih, w_hh, b_hh), all detached
        for layer in range(self.cfg.num_layers):
            self.layers.append(tuple(getattr(gru, f"{name}_l{layer}").detach()
                                     for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")))
        w_ih0 = self.layers[0][0]
        self.w_e, self.w_z = w_ih0[:, :E].contiguous(), w_ih0[:, E:].contiguous()
        w, b = model.out.weight.detach(), model.out.bias.detach()
        self.device = w.device
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.dtype = dtype
        self.out = None
        if w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            import warnings
            with warnings.catch_warnings():  # its module imports torch.jit's deprecated script API
                warnings.simplefilter("ignore", DeprecationWarning)
                from torch.utils.mkldnn import MkldnnLinear
            self.out = MkldnnLinear(model.out, dtype)  # oneDNN with the weights packed once
        self.w_out, self.b_out = w.to(dtype), b.to(dtype)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        h = h.to(self.dtype)
        out = self.out(h) if self.out is not None else F.linear(h, self.w_out, self.b_out)
        return out.float()

    def _token_nll(self, states: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """-log softmax(out(states))[tgt] per row, in chunks whose logits fit in cache."""
        nll = torch.empty(states.shape[0], dtype=torch.float32, device=states.device)
        for s in range(0, states.shape[0], self.chunk):
            logits = self._logits(states[s:s + self.chunk])  # (c, V)
            nll[s:s + self.chunk] = torch.logsumexp(logits, 1) - logits.gather(1, tgt[s:s + self.chunk, None])[:, 0]
        return nll

    @torch.no_grad()
    def nll(self, dec_in: torch.Tensor, dec_tgt: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x_b|z_sb) for codes z (S, B, d) of the B sentences of a batch (dec_in,
        dec_tgt: (B, T)). Returns (rec, rec_eos), each (S, B): words + <eos>, and the
        <eos> term alone. Equal to token_nll on the rows up to float rounding."""
        model, cfg = self.model, self.cfg
        if model.training:
            raise RuntimeError("Scorer is for evaluation: call model.eval() first")
        S, B, d = z.shape
        T = dec_in.shape[1]
        H, L = cfg.hidden_dim, cfg.num_layers
        z = z.to(self.w_z.dtype)
        gx_e = F.linear(model.embedding(dec_in), self.w_e, self.layers[0][1])  # (B, T, 3H): once per sentence
        gx_z = (z.reshape(S * B, d) @ self.w_z.T).view(S, B, 3 * H)  # (S, B, 3H): once per sample
        h = list(model.init_hidden(z.reshape(S * B, d)).view(L, S, B, H).unbind(0))
        real = dec_tgt != cfg.pad_id  # (B, T)
        rec = torch.zeros(S, B, dtype=torch.float32, device=z.device)
        rec_eos = torch.zeros_like(rec)
        for t in range(T):
            x = gx_e[:, t] + gx_z  # (S, B, 3H)
            for layer, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.layers):
                if layer:
                    x = F.linear(h[layer - 1], w_ih, b_ih)
                gh = F.linear(h[layer], w_hh, b_hh)
                xr, xu, xn = x.chunk(3, -1)
                hr, hu, hn = gh.chunk(3, -1)
                r = torch.sigmoid(xr + hr)
                u = torch.sigmoid(xu + hu)
                n = torch.tanh(torch.addcmul(xn, r, hn))
                h[layer] = torch.lerp(n, h[layer], u)  # (1 - u) n + u h
            # project this step's real positions now, while the states are in cache
            keep = real[:, t]  # (B,)
            if not keep.any():
                continue
            states = h[-1] if keep.all() else h[-1][:, keep]  # (S, b, H)
            nll = self._token_nll(states.reshape(-1, H), dec_tgt[keep, t].repeat(S)).view(S, -1)
            if keep.all():
                rec += nll
            else:
                rec[:, keep] += nll
            at_eos = dec_tgt[:, t] == cfg.eos_id  # (B,)
            if at_eos.any():
                rec_eos[:, at_eos] += nll[:, at_eos[keep]]
        return rec, rec_eos
