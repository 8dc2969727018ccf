"""Official ICL+PMD(+PFR) checkpoints re-rank with the public decoder's scores.

The reference below is the public ``CrossModel`` forward written from the raw checkpoint tensors with plain torch
ops (official-checkpoint.md, "Notes on the decoder"; method.md, "PMD"): a self-attention block (TF-style LayerNorm,
eps 1e-12), a cross-attention block whose LayerNorm ``ln_1`` normalises the image-token queries only (the clip
tokens enter as keys and values as the encoder left them), padded frames masked out, a pooler and 10 * cos(., w).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from rice.models.official import load_official_state

W, MLP, HEADS = 768, 3072, 8


def _block(prefix: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    def rnd(*shape):
        return 0.02 * torch.randn(shape, generator=g)

    def norm_weight():
        return 1.0 + 0.1 * torch.randn(W, generator=g)

    return {
        f"{prefix}attn.in_proj_weight": rnd(3 * W, W), f"{prefix}attn.in_proj_bias": rnd(3 * W),
        f"{prefix}attn.out_proj.weight": rnd(W, W), f"{prefix}attn.out_proj.bias": rnd(W),
        f"{prefix}ln_1.weight": norm_weight(), f"{prefix}ln_1.bias": rnd(W),
        f"{prefix}mlp.c_fc.weight": rnd(MLP, W), f"{prefix}mlp.c_fc.bias": rnd(MLP),
        f"{prefix}mlp.c_proj.weight": rnd(W, MLP), f"{prefix}mlp.c_proj.bias": rnd(W),
        f"{prefix}ln_2.weight": norm_weight(), f"{prefix}ln_2.bias": rnd(W),
    }  # fmt: skip


def _public_state(variant: str) -> dict[str, torch.Tensor]:
    """A ``rice_final.pth`` of variant b (ICL+PMD) or c (+PFR) in the released layout (``module.`` keys)."""
    g = torch.Generator().manual_seed(0)
    enc, dec = "image_encoder.model.", "transformer.transformer."
    state = {
        f"{enc}class_embedding": 0.02 * torch.randn(W, generator=g),
        f"{enc}positional_embedding": 0.02 * torch.randn(50, W, generator=g),
        f"{enc}proj": 0.02 * torch.randn(W, 512, generator=g),
        f"{enc}conv1.weight": 0.02 * torch.randn(W, 3, 32, 32, generator=g),
        f"{enc}ln_pre.weight": torch.ones(W), f"{enc}ln_pre.bias": torch.zeros(W),
        f"{enc}ln_post.weight": torch.ones(W), f"{enc}ln_post.bias": torch.zeros(W),
        "transformer.logit_scale": torch.tensor(4.0),
        f"{dec}embeddings.class_embedding": torch.zeros(W),
        f"{dec}embeddings.position_embedding.weight": torch.zeros(50, W),
        f"{dec}embeddings.layer_norm.weight": torch.ones(W), f"{dec}embeddings.layer_norm.bias": torch.zeros(W),
        f"{dec}pooler.layer_norm.weight": 1.0 + 0.1 * torch.randn(W, generator=g),
        f"{dec}pooler.layer_norm.bias": 0.02 * torch.randn(W, generator=g),
        f"{dec}pooler.dense.weight": 0.05 * torch.randn(W, W, generator=g),
        "transformer.heads.vim.weight": torch.randn(1, W, generator=g),
    }  # fmt: skip
    for i in range(12):
        state.update(_block(f"{enc}transformer.resblocks.{i}.", g))
    for i in (0, 1):
        state.update(_block(f"{dec}transformer.layers.{i}.", g))
    if variant == "c":
        state["transformer.heads.rec.0.weight"] = torch.ones(4, 8, 1, 1)
        state["transformer.heads.rec.0.bias"] = torch.zeros(4)
        state["transformer.heads.rec.2.weight"] = torch.ones(1, 4, 1, 1)
        state["transformer.heads.rec.2.bias"] = torch.zeros(1)
    return {f"module.{k}": v for k, v in state.items()}


def _attention(sd, prefix, query, key_value, additive_mask):
    """The public multi-head attention: q from ``query``, k/v from ``key_value``, softmax(qk^T/sqrt(d) + mask)."""
    w, b = sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"]
    q = query @ w[:W].t() + b[:W]
    k = key_value @ w[W : 2 * W].t() + b[W : 2 * W]
    v = key_value @ w[2 * W :].t() + b[2 * W :]
    hd = W // HEADS
    q, k, v = (t.reshape(t.shape[0], t.shape[1], HEADS, hd).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if additive_mask is not None:
        logits = logits + additive_mask[:, None, None, :]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(query.shape)
    return out @ sd[prefix + "out_proj.weight"].t() + sd[prefix + "out_proj.bias"]


def _mlp(sd, prefix, x):
    h = x @ sd[prefix + "mlp.c_fc.weight"].t() + sd[prefix + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return h @ sd[prefix + "mlp.c_proj.weight"].t() + sd[prefix + "mlp.c_proj.bias"]


def _tf_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


def public_decoder_scores(sd, image_tokens, video_tokens, frame_mask):
    """CrossModel + heads.vim of the public code, from the (prefix-stripped) state dict. Shapes as the decoder's."""
    p = "transformer.transformer.transformer.layers."
    b, t, l_vid, _ = video_tokens.shape
    x = image_tokens
    # layers.0: self-attention over the image tokens (nn.MultiheadAttention, TF-style LayerNorm eps 1e-12)
    h = _tf_layer_norm(x, sd[p + "0.ln_1.weight"], sd[p + "0.ln_1.bias"], 1e-12)
    x = x + _attention(sd, p + "0.attn.", h, h, None)
    x = x + _mlp(sd, p + "0.", _tf_layer_norm(x, sd[p + "0.ln_2.weight"], sd[p + "0.ln_2.bias"], 1e-12))
    # layers.1: cross-attention; ln_1 on the queries only, keys/values = the raw clip tokens, padded frames masked
    context = video_tokens.reshape(b, t * l_vid, W)
    additive = (1.0 - frame_mask.to(x.dtype).repeat_interleave(l_vid, dim=1)) * -1e9
    h = F.layer_norm(x, (W,), sd[p + "1.ln_1.weight"], sd[p + "1.ln_1.bias"], 1e-5)
    x = x + _attention(sd, p + "1.attn.", h, context, additive)
    x = x + _mlp(sd, p + "1.", F.layer_norm(x, (W,), sd[p + "1.ln_2.weight"], sd[p + "1.ln_2.bias"], 1e-5))
    pooler = "transformer.transformer.pooler."
    pooled = F.layer_norm(x, (W,), sd[pooler + "layer_norm.weight"], sd[pooler + "layer_norm.bias"], 1e-5)[:, 0]
    pooled = F.relu(pooled @ sd[pooler + "dense.weight"].t())
    w = sd["transformer.heads.vim.weight"][0]
    return 10.0 * F.cosine_similarity(pooled, w[None], dim=-1)


@pytest.mark.parametrize("variant", ["b"])
def test_official_pmd_checkpoint_gives_the_public_decoder_scores(variant):
    state = _public_state(variant)
    model, info = load_official_state(state)
    assert info.variant == variant
    stripped = {k[len("module."):]: v.double() for k, v in state.items()}
    decoder = model.decoder.double().eval()
    g = torch.Generator().manual_seed(1)
    # Pre-final-norm encoder tokens are far from unit scale, so normalising the keys/values or not matters.
    image_tokens = 3.0 * torch.randn(3, 50, W, generator=g, dtype=torch.float64) + 1.0
    video_tokens = 3.0 * torch.randn(3, 4, 50, W, generator=g, dtype=torch.float64) - 0.5
    frame_mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    with torch.no_grad():
        ours = decoder(image_tokens, video_tokens, frame_mask).scores
        with_maps = decoder(image_tokens, video_tokens, frame_mask, return_attention=True).scores
    reference = public_decoder_scores(stripped, image_tokens, video_tokens, frame_mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_maps, reference, atol=1e-5, rtol=0)  # the manual-attention path too
    assert reference.std() > 1e-3  # the scores differ between pairs: the comparison is not vacuous
