"""An independent forward pass of the Pairwise Matching Decoder, written from its weights with plain tensor ops.

It shares no code with ``rice.models.decoder``: it reads the decoder's ``state_dict`` and recomputes everything with
explicit per-pair, per-head loops (LayerNorm by hand, softmax over the real frames only instead of a mask). Tests
compare the decoder, the PFR loss and re-ranking with it.

Block structure (the public code's ``CrossModel``): a self-attention block over the image tokens, then a
cross-attention block whose queries are the image tokens and whose keys/values are the clip's frame tokens, then
a pooler (LayerNorm, token 0, Linear without bias, ReLU) and ``10 * cos(pooled, w)``.
``normalize_context`` says whether the cross block sends the clip tokens through its ``ln_1`` as well as the
queries (rice's current block: True); the public block normalises the queries only (False).
"""

from __future__ import annotations

import math

import torch

SELF_EPS, CROSS_EPS, POOLER_EPS = 1e-12, 1e-5, 1e-5  # the public code: a TF-style LayerNorm in the self block


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def attention(
    query: torch.Tensor, context: torch.Tensor, state: dict[str, torch.Tensor], prefix: str, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair: query (Lq, W), context (Lk, W) -> output (Lq, W) and probabilities (H, Lq, Lk)."""
    width = query.shape[-1]
    head_dim = width // heads
    w_in, b_in = state[f"{prefix}.in_proj_weight"], state[f"{prefix}.in_proj_bias"]
    outputs, probs = [], []
    for h in range(heads):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        q = query @ w_in[:width][rows].T + b_in[:width][rows]
        k = context @ w_in[width : 2 * width][rows].T + b_in[width : 2 * width][rows]
        v = context @ w_in[2 * width :][rows].T + b_in[2 * width :][rows]
        logits = q @ k.T / math.sqrt(head_dim)
        p = torch.exp(logits - logits.max(-1, keepdim=True).values)
        p = p / p.sum(-1, keepdim=True)
        outputs.append(p @ v)
        probs.append(p)
    out = torch.cat(outputs, dim=-1) @ state[f"{prefix}.out_proj.weight"].T + state[f"{prefix}.out_proj.bias"]
    return out, torch.stack(probs)


def block(
    x: torch.Tensor,
    context: torch.Tensor | None,
    state: dict[str, torch.Tensor],
    prefix: str,
    heads: int,
    eps: float,
    normalize_context: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pre-norm residual block for one pair: x (Lq, W); context (Lk, W) or None (self-attention)."""

    def ln(name: str, t: torch.Tensor) -> torch.Tensor:
        return layer_norm(t, state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"], eps)

    h = ln("ln_1", x)
    if context is None:
        c = h
    else:
        c = ln("ln_1", context) if normalize_context else context
    out, probs = attention(h, c, state, f"{prefix}.attn", heads)
    x = x + out
    hidden = ln("ln_2", x) @ state[f"{prefix}.mlp.c_fc.weight"].T + state[f"{prefix}.mlp.c_fc.bias"]
    hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
    return x + hidden @ state[f"{prefix}.mlp.c_proj.weight"].T + state[f"{prefix}.mlp.c_proj.bias"], probs


def reference_scores(
    state: dict[str, torch.Tensor],
    image_tokens: torch.Tensor,
    video_tokens: torch.Tensor,
    frame_mask: torch.Tensor,
    heads: int,
    normalize_context: bool = True,
    score_scale: float = 10.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scores (B,) of the pairs (image_tokens[b], clip b) and each pair's cross-attention (H, L_img, T_b * L_vid)
    over its real frames only (padded frames are dropped, not masked)."""
    state = {k: v.detach().to(dtype) for k, v in state.items() if v.is_floating_point()}
    scores, attentions = [], []
    for b in range(image_tokens.shape[0]):
        real = video_tokens[b][frame_mask[b].bool()]  # (T_b, L, W)
        context = real.reshape(-1, real.shape[-1]).to(dtype)
        x, _ = block(image_tokens[b].to(dtype), None, state, "self_block", heads, SELF_EPS)
        x, probs = block(x, context, state, "cross_block", heads, CROSS_EPS, normalize_context)
        pooled = layer_norm(x[0], state["pooler.layer_norm.weight"], state["pooler.layer_norm.bias"], POOLER_EPS)
        pooled = torch.relu(pooled @ state["pooler.dense.weight"].T)
        w = state["match_head.weight"][0]
        scores.append(score_scale * (pooled @ w) / (pooled.norm() * w.norm()))
        attentions.append(probs)
    return torch.stack(scores), attentions
