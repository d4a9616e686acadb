"""Batched decoding from latent codes z (B, d) to token ids.

Methods (all stop per sentence at <eos> or after `max_len` tokens):

    greedy   argmax at every step
    sample   ancestral sampling from softmax(logits / temperature), optionally
             restricted to the top-k tokens and/or the top-p nucleus
    beam     beam search over sum of token log-probabilities (`beam_search`)

`ban` lists token ids that are never produced (e.g. <unk>); <pad> and <sos> are
always banned and <eos> can never be. Randomness comes only from the explicit
`generator`, so a seeded generator gives the same output every time.
"""

from __future__ import annotations

import torch

from .model import SentenceAE

METHODS = ("greedy", "sample", "beam")


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


def _banned(cfg, ban) -> list[int]:
    return sorted({int(t) for t in ban if int(t) != cfg.eos_id} | {cfg.pad_id, cfg.sos_id})


def _strip(rows: list[list[int]], cfg) -> list[list[int]]:
    """Cut each row at its first <eos>/<pad>."""
    result = []
    for row in rows:
        ids = []
        for i in row:
            if i in (cfg.eos_id, cfg.pad_id):
                break
            ids.append(i)
        result.append(ids)
    return result


@torch.no_grad()
def decode(model: SentenceAE, z: torch.Tensor, max_len: int = 100, method: str = "greedy",
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, ban=(),
           generator: torch.Generator | None = None, beam_size: int = 5,
           length_penalty: float = 0.0) -> list[list[int]]:
    """Decode token ids (without <sos>/<eos>) for each row of z (B, d)."""
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "beam":
        return beam_search(model, z, beam_size, max_len, ban, length_penalty)[0]
    was_training = model.training
    model.eval()
    cfg = model.cfg
    B = z.shape[0]
    hidden = model.init_hidden(z)
    tok = torch.full((B, 1), cfg.sos_id, dtype=torch.long, device=z.device)
    done = torch.zeros(B, dtype=torch.bool, device=z.device)
    out = torch.full((B, max_len), cfg.pad_id, dtype=torch.long, device=z.device)
    banned = _banned(cfg, ban)
    for t in range(max_len):
        logits, hidden = model.logits(tok, z, hidden)
        logits = logits[:, -1].float()  # (B, V)
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
    return _strip(out.tolist(), cfg)


@torch.no_grad()
def beam_search(model: SentenceAE, z: torch.Tensor, beam_size: int = 5, max_len: int = 100, ban=(),
                length_penalty: float = 0.0) -> tuple[list[list[int]], list[float]]:
    """Beam search for argmax_x log p(x|z), every row of z (B, d) at once.

    Returns (ids without <eos>, score) per row; score = sum of token log-probs
    including <eos> (a hypothesis cut at max_len has no <eos> term), divided by
    (tokens)^length_penalty (0 = plain log-prob, the default).

    Layout: K = beam_size hypotheses per row live in (B*K, ...) tensors, row b's
    beams at b*K .. b*K+K-1. A finished hypothesis stays in its beam and can only
    extend itself by <pad> at cost 0, so it keeps competing with the open ones;
    the search stops once every beam of every row is finished. With beam_size 1
    this is exactly greedy decoding.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    was_training = model.training
    model.eval()
    cfg = model.cfg
    B, K, dev = z.shape[0], beam_size, z.device
    V = cfg.vocab_size
    zk = z.repeat_interleave(K, dim=0)  # (B*K, d)
    hidden = model.init_hidden(zk)  # (L, B*K, H)
    tok = torch.full((B * K, 1), cfg.sos_id, dtype=torch.long, device=dev)
    # all K beams start identical: only beam 0 may expand at step 0, else the
    # top-K would hold K copies of the same hypothesis
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    done = torch.zeros(B, K, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B, K, dtype=torch.long, device=dev)  # tokens so far, incl. <eos>
    hist = torch.empty(B, K, 0, dtype=torch.long, device=dev)
    banned = _banned(cfg, ban)
    finished_row = torch.full((V,), float("-inf"), device=dev)
    finished_row[cfg.pad_id] = 0.0
    for _ in range(max_len):
        logits, hidden = model.logits(tok, zk, hidden)
        logp = torch.log_softmax(logits[:, -1].float(), -1)  # (B*K, V)
        logp[:, banned] = float("-inf")
        logp = torch.where(done.view(-1, 1), finished_row, logp)
        cand = (scores.view(-1, 1) + logp).view(B, K * V)  # (B, K*V)
        scores, flat = cand.topk(K, dim=-1)  # (B, K), sorted best first
        src, nxt = flat // V, flat % V  # (B, K) beam of origin, new token
        hist = torch.cat([hist.gather(1, src.unsqueeze(-1).expand(-1, -1, hist.shape[2])),
                          nxt.unsqueeze(-1)], dim=2)
        was_done = done.gather(1, src)
        lengths = lengths.gather(1, src) + (~was_done).long()
        # a -inf beam only exists when K exceeds the allowed continuations; it is dead
        done = was_done | (nxt == cfg.eos_id) | torch.isinf(scores)
        # carry the decoder state of each beam's origin along
        origin = (src + torch.arange(B, device=dev).unsqueeze(1) * K).view(-1)  # (B*K,)
        hidden = hidden[:, origin]
        tok = nxt.view(-1, 1)
        if done.all():
            break
    model.train(was_training)
    final = scores / lengths.clamp(min=1).float() ** length_penalty if length_penalty else scores
    best = final.argmax(-1)  # (B,); ties go to the higher-ranked beam
    rows = hist[torch.arange(B, device=dev), best].tolist()
    return _strip(rows, cfg), final[torch.arange(B, device=dev), best].tolist()
