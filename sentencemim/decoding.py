"""Batched decoding from latent codes: greedy, sampling (temperature, top-k,
top-p), and a ban list (e.g. <unk>). Decoding stops per sentence at <eos> or at
`max_len` tokens; seeded through an explicit torch.Generator."""

from __future__ import annotations

import torch

from .model import SentenceAE


def _filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    logits = logits / max(temperature, 1e-8)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def decode(model: SentenceAE, z: torch.Tensor, max_len: int = 100, method: str = "greedy",
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, ban=(),
           generator: torch.Generator | None = None) -> list[list[int]]:
    """Decode token ids (without <sos>/<eos>) for each row of z (B, d)."""
    if method not in ("greedy", "sample"):
        raise ValueError(f"unknown decoding method {method!r}")
    was_training = model.training
    model.eval()
    cfg = model.cfg
    B = z.shape[0]
    hidden = model.init_hidden(z)
    tok = torch.full((B, 1), cfg.sos_id, dtype=torch.long, device=z.device)
    done = torch.zeros(B, dtype=torch.bool, device=z.device)
    out = torch.full((B, max_len), cfg.pad_id, dtype=torch.long, device=z.device)
    banned = [t for t in ban if t != cfg.eos_id] + [cfg.pad_id, cfg.sos_id]
    for t in range(max_len):
        logits, hidden = model.logits(tok, z, hidden)
        logits = logits[:, -1].float()
        logits[:, banned] = float("-inf")
        if method == "greedy":
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(_filter_logits(logits, temperature, top_k, top_p), -1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = nxt.masked_fill(done, cfg.pad_id)
        out[:, t] = nxt
        done |= nxt == cfg.eos_id
        if done.all():
            break
        tok = nxt.unsqueeze(1)
    model.train(was_training)
    result = []
    for row in out.tolist():
        ids = []
        for i in row:
            if i in (cfg.eos_id, cfg.pad_id):
                break
            ids.append(i)
        result.append(ids)
    return result
