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

`nll_grad` returns d(-log p(x|z))/dz as well (for HMC and fitted proposals): the same
recurrence under autograd, with the vocabulary projection in a custom autograd function
that keeps d nll / d state (rows x H) instead of the (rows x V) logits, so the memory is
that of the GRU states, not of T x V logits per row. Its two projections (the logits, and
(softmax - onehot) W for the gradient) run in the scorer's precision like `nll`'s; the
recurrence, the softmax and the results are in the model's dtype.

`precision="bf16"` runs the vocabulary projection in bfloat16: the logits come out
rounded to bfloat16 (about 3 significant digits) and the log-softmax is computed from
them in float32. Faster on CPUs with AVX512-BF16, but not exact: docs/evaluation.md
states the measured deviation. The default is the model's own precision (float32).

On a GPU the same equations run, but the states of all steps are kept and projected
afterwards in large chunks (per-step masking would synchronise with the host at every
step).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..config import PRECISIONS
from ..model import SentenceAE

with warnings.catch_warnings():  # torch.utils.mkldnn imports torch.jit's deprecated script API
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from torch.utils.mkldnn import MkldnnLinear
    except ImportError:  # pragma: no cover - builds without the module
        MkldnnLinear = None


def _onednn_linear(module: torch.nn.Linear, dtype: torch.dtype):
    """A oneDNN copy of `module` in `dtype`, or None where oneDNN cannot run it here
    (no oneDNN, a GPU, float64, or a CPU without the bf16 instructions oneDNN needs).
    The probe feeds an input of `dtype`, as scoring does: a float32 probe would pass on a
    CPU whose bf16 path then fails (AVX2 only: 'bf16 path needs avx512bw')."""
    w = module.weight
    if MkldnnLinear is None or w.device.type != "cpu" or w.dtype != torch.float32 \
            or not torch.backends.mkldnn.is_available():
        return None
    try:
        lin = MkldnnLinear(module, dtype)
        lin(torch.zeros(2, w.shape[1], dtype=dtype))  # probe with the dtype the scorer will feed
        return lin
    except RuntimeError:
        return None


def bf16_problem(device) -> str | None:
    """Why bf16 scoring cannot run on `device` ('cpu', 'cuda:0', ...), or None if it can:
    on a CPU, oneDNN must run a bf16 linear layer (probed with a bf16 input); on a GPU,
    torch must report bf16 support."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return None if ok else f"{device} does not support bfloat16"
    if device.type != "cpu":
        return f"bf16 scoring is not supported on {device.type}"
    if _onednn_linear(torch.nn.Linear(8, 4), torch.bfloat16) is None:
        return ("this CPU has no oneDNN bf16 matrix path (it needs AVX512-BF16, AMX or AVX-NE-CONVERT); "
                "emulated bf16 would be slower than fp32")
    return None


def check_precision(precision: str, device, flag: str = "--precision") -> None:
    """A UserError, one line, for a precision this device does not truly run."""
    from ..errors import UserError
    if precision == "bf16":
        why = bf16_problem(device)
        if why:
            raise UserError(f"{flag} bf16: {why}; use {flag} fp32")


def resolve_gradient_precision(name: str, device) -> str:
    """The precision of gradients that only steer (HMC's leapfrog, proposal fits): "auto" ->
    "bf16" where `device` runs bf16 natively, else "fp32"; "bf16" where it does not -> a
    UserError in one line."""
    if name == "auto":
        return "fp32" if bf16_problem(device) else "bf16"
    check_precision(name, device, "--gradient-precision")
    return name


class _TokenNLL(torch.autograd.Function):
    """-log softmax(h W^T + b)[tgt] per row (rows,), differentiable in h only. The forward
    computes d nll / d h = (softmax - onehot) W chunk by chunk and saves it: (rows, H).
    W and b in bfloat16: both products run in bfloat16 (the softmax in h's dtype)."""

    @staticmethod
    def forward(ctx, h, w, b, tgt, chunk):
        nll = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
        grad_h = torch.empty_like(h)
        for s in range(0, h.shape[0], chunk):
            logits = F.linear(h[s:s + chunk].to(w.dtype), w, b).to(h.dtype)  # (c, V)
            t = tgt[s:s + chunk, None]
            top = logits.amax(1, keepdim=True)
            e = (logits - top).exp_()  # one exp gives both the log-sum-exp and the softmax
            total = e.sum(1, keepdim=True)
            nll[s:s + chunk] = (top + torch.log(total) - logits.gather(1, t))[:, 0]
            p = e.div_(total).scatter_add_(1, t, torch.full_like(t, -1, dtype=logits.dtype))
            grad_h[s:s + chunk] = (p.to(w.dtype) @ w).to(h.dtype)  # (c, H)
        ctx.save_for_backward(grad_h)
        return nll

    @staticmethod
    def backward(ctx, g):
        (grad_h,) = ctx.saved_tensors
        return g[:, None] * grad_h, None, None, None, None


class Scorer:
    """Reads the weights of an eval-mode `SentenceAE` once; `nll` refuses to run if any
    parameter has been changed in place since (build a new Scorer then)."""

    def __init__(self, model: SentenceAE, precision: str = "fp32", chunk: int | None = None,
                 check_support: bool = True):
        """check_support=False lets a test run the plain bf16 path (the GPU path) on a CPU
        that has no native bf16 (emulated: slow, but the same rounding)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if check_support:
            check_precision(precision, model.out.weight.device)
        self.model, self.cfg, self.precision = model, model.cfg, precision
        gru, E = model.decoder, model.cfg.embedding_dim
        self.layers = []  # per layer: (w_ih, b_ih, w_hh, b_hh), all detached
        for layer in range(self.cfg.num_layers):
            self.layers.append(tuple(getattr(gru, f"{name}_l{layer}").detach()
                                     for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")))
        w_ih0 = self.layers[0][0]
        self.w_e, self.w_z = w_ih0[:, :E].contiguous(), w_ih0[:, E:].contiguous()
        if model.has_latent:  # init_hidden as one linear map of z
            self.w_h0, self.b_h0 = model.z_to_hidden.weight.detach(), model.z_to_hidden.bias.detach()
        else:  # the language model: zero initial state (z has 0 columns)
            w0 = model.out.weight
            self.w_h0 = w0.new_zeros(self.cfg.num_layers * self.cfg.hidden_dim, 0)
            self.b_h0 = w0.new_zeros(self.cfg.num_layers * self.cfg.hidden_dim)
        w, b = model.out.weight.detach(), model.out.bias.detach()
        self.param_dtype = w.dtype
        self.per_step = w.device.type == "cpu"
        self.chunk = chunk or (256 if self.per_step else 8192)
        self.dtype = torch.bfloat16 if precision == "bf16" else w.dtype
        self.out = _onednn_linear(model.out, self.dtype)
        self.w_out, self.b_out = w.to(self.dtype), b.to(self.dtype)
        self._grad = False
        self._versions = self._param_versions()

    def _param_versions(self):
        return [p._version for p in self.model.parameters()]

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.dtype)
        out = self.out(x) if self.out is not None else F.linear(x, self.w_out, self.b_out)
        return out.to(self.param_dtype)

    def _token_nll(self, states: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """-log softmax(out(states))[tgt] per row, in chunks whose logits fit in cache."""
        if self._grad:
            return _TokenNLL.apply(states, self.w_out, self.b_out, tgt, self.chunk)
        nll = torch.empty(states.shape[0], dtype=self.param_dtype, device=states.device)
        for s in range(0, states.shape[0], self.chunk):
            logits = self._logits(states[s:s + self.chunk])  # (c, V)
            # under bf16 the target logit is taken from the same rounded logits: its rounding
            # error then largely cancels against the log-sum-exp's (measured: mean deviation
            # 0.0002 nats/sentence this way, 0.01 with a float32 target logit)
            target = logits.gather(1, tgt[s:s + self.chunk, None])[:, 0]
            nll[s:s + self.chunk] = torch.logsumexp(logits, 1) - target
        return nll

    @torch.no_grad()
    def nll(self, dec_in: torch.Tensor, dec_tgt: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x_b|z_sb) for codes z (S, B, d) of the B sentences of a batch (dec_in,
        dec_tgt: (B, T)). Returns (rec, rec_eos), each (S, B): words + <eos>, and the
        <eos> term alone. Equal to token_nll on the rows up to float rounding."""
        return self._run(dec_in, dec_tgt, z)

    def nll_grad(self, dec_in: torch.Tensor, dec_tgt: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rec, d rec / dz): -log p(x_b|z_sb) (S, B) and its gradient in z (S, B, d), in the
        model's dtype; under bf16 both are approximate (the projections are rounded), which
        HMC's leapfrog can use (ais.py: the Metropolis test takes exact values). Rows are
        independent, so the gradient of the sum is every row's own gradient."""
        self._grad = True
        try:
            with torch.enable_grad():
                z = z.detach().to(self.param_dtype).requires_grad_(True)
                rec, _ = self._run(dec_in, dec_tgt, z)
                (g,) = torch.autograd.grad(rec.sum(), z)
        finally:
            self._grad = False
        return rec.detach(), g

    def _run(self, dec_in, dec_tgt, z):
        model, cfg = self.model, self.cfg
        if model.training:
            raise RuntimeError("Scorer is for evaluation: call model.eval() first")
        if self._param_versions() != self._versions:
            raise RuntimeError("the model's parameters changed after this Scorer was built; build a new one")
        S, B, d = z.shape
        T = dec_in.shape[1]
        H, L = cfg.hidden_dim, cfg.num_layers
        z = z.to(self.param_dtype)
        with torch.no_grad():  # z-independent
            gx_e = F.linear(model.embedding(dec_in), self.w_e, self.layers[0][1])  # (B, T, 3H): once per sentence
        gx_z = (z.reshape(S * B, d) @ self.w_z.T).view(S, B, 3 * H)  # (S, B, 3H): once per sample
        h = list(F.linear(z.reshape(S * B, d), self.w_h0, self.b_h0).view(S, B, L, H).permute(2, 0, 1, 3).unbind(0))
        real = dec_tgt != cfg.pad_id  # (B, T)
        rec = torch.zeros(S, B, dtype=self.param_dtype, device=z.device)
        rec_eos = torch.zeros_like(rec)
        tops = []  # GPU path: every step's top states, projected after the loop
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
            if not self.per_step:
                tops.append(h[-1])
                continue
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
        if not self.per_step:  # real positions of all steps at once, as token_nll does
            states = torch.stack(tops, 2)[:, real]  # (S, N_tok, H)
            tgt = dec_tgt[real]
            nll = self._token_nll(states.reshape(-1, H), tgt.repeat(S)).view(S, -1)
            sent = torch.arange(B, device=z.device).unsqueeze(1).expand(B, T)[real]
            rec.index_add_(1, sent, nll)
            is_eos = tgt == cfg.eos_id
            rec_eos.index_add_(1, sent[is_eos], nll[:, is_eos])
        return rec, rec_eos
