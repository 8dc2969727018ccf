"""The Pairwise Matching Decoder (PMD) and the head-merging convolutions of Patch Feature Reconstruction (PFR).

The decoder scores one (image, clip) pair: a self-attention block over the image tokens, then a cross-attention
block whose queries are the image tokens and whose keys/values are the clip's T*L frame tokens (padded frames
masked out), then a pooler and a cosine match head (method.md, "PMD"). Module names follow the public code's
``CrossModel`` so the official checkpoints map onto it one key at a time (see ``rice.models.official``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class DecoderAttention(nn.Module):
    """Multi-head attention with CLIP/``nn.MultiheadAttention`` parameter names (``in_proj_weight``, ``out_proj``).

    Two paths give the same result: ``F.scaled_dot_product_attention`` (fused, used when the probabilities are not
    needed) and a manual softmax that also returns the probabilities (needed by PFR).
    """

    def __init__(self, width: int, heads: int, attn_drop: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by {heads} heads; choose a divisor of {width}")
        self.heads, self.head_dim, self.attn_drop = heads, width // heads, attn_drop
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, H, L, hd)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lk, W) -> keys and values (B, H, Lk, hd) each."""
        _, w_k, w_v = self.in_proj_weight.chunk(3)
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        return self._split(F.linear(context, w_k, b_k)), self._split(F.linear(context, w_v, b_v))

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        return_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            query: (B, Lq, W).
            context: (B, Lk, W) keys and values.
            key_mask: (B, Lk) bool, True = attend; None = attend to all.
            return_probs: also return the attention probabilities (B, H, Lq, Lk) (before dropout).

        Returns:
            (B, Lq, W) output and the probabilities or None.
        """
        return self.attend(query, *self.project_kv(context), key_mask, return_probs)

    def attend(
        self,
        query: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        return_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`forward` with the keys and values already projected (`project_kv`), so a clip is projected once for
        all the images it is paired with."""
        w_q, b_q = self.in_proj_weight.chunk(3)[0], self.in_proj_bias.chunk(3)[0]
        q = self._split(F.linear(query, w_q, b_q))
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        drop = self.attn_drop if self.training else 0.0
        probs = None
        if return_probs:
            logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            probs = logits.softmax(dim=-1)
            out = F.dropout(probs, drop, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out_proj(out.transpose(1, 2).flatten(2)), probs


class DecoderMlp(nn.Module):
    def __init__(self, width: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class DecoderBlock(nn.Module):
    """A pre-norm block: x + attn(ln_1(x), context); x + mlp(ln_2(x)).

    With ``context=None`` it is a self-attention block. In the cross block the public code normalises only the
    queries: the clip tokens enter the attention as they leave the encoder (pre-final-norm). ``norm_context=True``
    passes them through the same ``ln_1`` too (an option: they are then on the scale the block was initialised for).
    """

    def __init__(
        self, width: int, heads: int, attn_drop: float = 0.0, eps: float = 1e-5, norm_context: bool = False
    ):
        super().__init__()
        self.norm_context = norm_context
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = DecoderAttention(width, heads, attn_drop)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = DecoderMlp(width)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        return_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.ln_1(x)
        if context is None:
            c = h
        else:
            c = self.ln_1(context) if self.norm_context else context
        return self.forward_kv(x, *self.attn.project_kv(c), key_mask, return_probs, normed=h)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, Lk, hd) of a cross block's context, to be reused by several queries."""
        return self.attn.project_kv(self.ln_1(context) if self.norm_context else context)

    def forward_kv(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        return_probs: bool = False,
        normed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block on queries ``x`` (B, Lq, W) with projected keys/values (`context_kv`)."""
        out, probs = self.attn.attend(self.ln_1(x) if normed is None else normed, k, v, key_mask, return_probs)
        x = x + out
        return x + self.mlp(self.ln_2(x)), probs

    @torch.no_grad()
    def init_from_timm_block(self, block: nn.Module) -> None:
        """Copy a timm ViT ``Block`` (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) into this block."""
        pairs = [
            (self.ln_1.weight, block.norm1.weight), (self.ln_1.bias, block.norm1.bias),
            (self.attn.in_proj_weight, block.attn.qkv.weight), (self.attn.in_proj_bias, block.attn.qkv.bias),
            (self.attn.out_proj.weight, block.attn.proj.weight), (self.attn.out_proj.bias, block.attn.proj.bias),
            (self.ln_2.weight, block.norm2.weight), (self.ln_2.bias, block.norm2.bias),
            (self.mlp.c_fc.weight, block.mlp.fc1.weight), (self.mlp.c_fc.bias, block.mlp.fc1.bias),
            (self.mlp.c_proj.weight, block.mlp.fc2.weight), (self.mlp.c_proj.bias, block.mlp.fc2.bias),
        ]  # fmt: skip
        for ours, theirs in pairs:
            if theirs is None or ours.shape != theirs.shape:
                raise ValueError(
                    f"cannot initialise the decoder from {type(block).__name__}: shape "
                    f"{None if theirs is None else tuple(theirs.shape)} vs {tuple(ours.shape)}"
                )
            ours.copy_(theirs)


class Pooler(nn.Module):
    """LayerNorm, token 0, Linear without bias, ReLU."""

    def __init__(self, width: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, width, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, W)
        return F.relu(self.dense(self.layer_norm(tokens)[:, 0]))


class HeadMerge(nn.Module):
    """PFR's 1x1 convolutions that merge the attention heads: heads -> 4 -> 1, ReLU after each.

    Weights start at 1.0 and biases at 0 (method.md), so at initialisation the merged map is the head sum.
    """

    def __init__(self, heads: int, hidden: int = 4):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(heads, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1), nn.ReLU())
        for conv in (self.convs[0], self.convs[2]):
            nn.init.ones_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, scaled_probs: torch.Tensor) -> torch.Tensor:  # (B, H, Lq, Lk) -> (B, Lq, Lk)
        return self.convs(scaled_probs).squeeze(1)


@dataclass
class DecoderOutput:
    scores: torch.Tensor  # (B,) match score 10 * cos(pooled, w)
    attention: torch.Tensor | None  # (B, H, L_img, T*L_vid) cross-attention probabilities, when asked


class PairwiseMatchingDecoder(nn.Module):
    """PMD: scores (image, clip) pairs from their encoder tokens.

    Args:
        width: token width W (the encoder's width).
        heads: attention heads (8 for ViT-B, as the public code).
        attn_drop: attention dropout of the cross-attention block (0.1, as the public code).
        self_attn_drop: attention dropout of the self-attention block (0, as the public code's
            ``nn.MultiheadAttention``).
        norm_kv: also normalise the clip tokens (keys/values) with the cross block's ``ln_1``; the public code
            normalises the queries only (False).
        reconstruction: also build PFR's head-merging convs (``head_merge``); only when PFR is trained, so that
            every parameter gets a gradient.
        score_scale: the fixed factor of the cosine match score (10).
        match_head_init: the learned vector w: ``"normal"``, N(0, width^-1/2) (norm about 1), or
            ``"linear_default"``, ``nn.Linear``'s own init U(+-width^-1/2) (norm about 0.58), as the public code.
    """

    def __init__(
        self,
        width: int,
        heads: int = 8,
        attn_drop: float = 0.1,
        reconstruction: bool = False,
        score_scale: float = 10.0,
        self_attn_drop: float = 0.0,
        norm_kv: bool = False,
        match_head_init: str = "normal",
    ):
        super().__init__()
        if match_head_init not in ("normal", "linear_default"):
            raise ValueError(f"match_head_init {match_head_init!r} is unknown; choose 'normal' or 'linear_default'")
        self.width, self.heads, self.score_scale = width, heads, score_scale
        # eps as the public code: its self-attention block uses a TF-style LayerNorm (1e-12), the cross block 1e-5
        self.self_block = DecoderBlock(width, heads, self_attn_drop, eps=1e-12)
        self.cross_block = DecoderBlock(width, heads, attn_drop, eps=1e-5, norm_context=norm_kv)
        self.pooler = Pooler(width)
        self.match_head = nn.Linear(width, 1, bias=False)  # the learned vector w of 10 * cos(pooled, w)
        if match_head_init == "normal":  # else nn.Linear's kaiming-uniform init stays, as the public code
            nn.init.normal_(self.match_head.weight, std=width**-0.5)
        self.head_merge = HeadMerge(heads) if reconstruction else None

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def init_from_blocks(self, blocks: list[nn.Module] | None) -> bool:
        """Copy the encoder's last two blocks into (self_block, cross_block); returns False (random init) if None."""
        if blocks is None:
            return False
        if len(blocks) != 2:
            raise ValueError(f"expected the encoder's last 2 blocks, got {len(blocks)}")
        self.self_block.init_from_timm_block(blocks[0])
        self.cross_block.init_from_timm_block(blocks[1])
        return True

    def forward(
        self,
        image_tokens: torch.Tensor,
        video_tokens: torch.Tensor,
        frame_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> DecoderOutput:
        """Args:
            image_tokens: (B, L, W) encoder tokens of the images (pre-final-norm, CLS first).
            video_tokens: (B, T, L, W) encoder tokens of each clip's frames.
            frame_mask: (B, T) bool, True for real frames; every clip needs at least one.
            return_attention: return the cross-attention probabilities (manual attention path).
        """
        return self.score_states(
            self.image_states(image_tokens), *self.clip_states(video_tokens, frame_mask), return_attention
        )

    def image_states(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """The self-attention block's output (B, L, W): it depends on the image only, so an image paired with
        several clips needs it once."""
        return self.self_block(image_tokens)[0]

    def clip_states(
        self, video_tokens: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cross block's keys and values (B, H, T*L, hd) and key mask (B, T*L) of each clip: they depend on
        the clip only (the public block normalises the queries, not the clip tokens), so they are computed once
        per clip, not once per (image, clip) pair."""
        b, t, l_vid, w = video_tokens.shape
        k, v = self.cross_block.context_kv(video_tokens.reshape(b, t * l_vid, w))
        return k, v, frame_mask.bool().repeat_interleave(l_vid, dim=1)  # each frame's mask over its tokens

    def score_states(
        self,
        image_states: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> DecoderOutput:
        """Scores of pairs (image_states[p], clip p's k/v/mask); shapes as `image_states` and `clip_states`."""
        x, attention = self.cross_block.forward_kv(image_states, k, v, key_mask, return_probs=return_attention)
        pooled = self.pooler(x)  # (B, W)
        w_vec = self.match_head.weight[0]  # (W,)
        scores = self.score_scale * F.cosine_similarity(pooled, w_vec[None], dim=-1, eps=1e-6)
        return DecoderOutput(scores, attention)

    def merge_heads(self, attention: torch.Tensor) -> torch.Tensor:
        """PFR: (B, H, L_img, T*L_vid) probabilities -> (B, L_img, T*L_vid) merged logits (before the softmax).

        The probabilities are multiplied by sqrt(head_dim) first, as the public code.
        """
        if self.head_merge is None:
            raise RuntimeError("this decoder has no PFR head-merging convs; build it with reconstruction=True")
        return self.head_merge(attention * math.sqrt(self.head_dim))


def default_decoder_heads(width: int, preferred: int = 8) -> int:
    """The variant's head count: ``preferred`` (8, the public code) if it divides the width, else the largest
    divisor of ``width`` below it with a head dim of at least 8."""
    for heads in range(preferred, 0, -1):
        if width % heads == 0 and (width // heads >= 8 or heads == 1):
            return heads
    return 1


def build_decoder(
    encoder: nn.Module,
    heads: int | None = None,
    attn_drop: float = 0.1,
    reconstruction: bool = False,
    self_attn_drop: float = 0.0,
    norm_kv: bool = False,
    match_head_init: str = "normal",
) -> PairwiseMatchingDecoder:
    """The PMD decoder for ``encoder``: width = encoder.width, initialised from ``encoder.last_blocks(2)`` when the
    encoder has timm ViT blocks (random when it returns None, e.g. ``rice_tiny`` or Swin)."""
    width = int(encoder.width)
    decoder = PairwiseMatchingDecoder(
        width, heads or default_decoder_heads(width), attn_drop=attn_drop, reconstruction=reconstruction,
        self_attn_drop=self_attn_drop, norm_kv=norm_kv, match_head_init=match_head_init,
    )  # fmt: skip
    decoder.init_from_blocks(encoder.last_blocks(2))
    return decoder


def _rows_to_run(index: torch.Tensor, rows: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Which rows of one side to run and each pair's position among them, from the shapes alone: every row
    (None) when the pairs are at least as many as the rows, else one row per pair."""
    if index.numel() >= rows:
        return None, index
    return index, torch.arange(index.numel(), device=index.device)


def _take(tensor: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return tensor if rows is None else tensor[rows]


@dataclass
class DecoderStates:
    """What the decoder computes from one side of a pair alone, computed once and shared by every pair that uses
    the row: the image side's self-attention block output and the clip side's cross-block keys, values and key mask
    (`PairwiseMatchingDecoder.image_states` / `clip_states`). A training step builds it once for the local images
    and the clips of every rank; PMD's positive pairs, its mined negatives and PFR's attention all read it."""

    image_states: torch.Tensor  # (N_img, L, W)
    keys: torch.Tensor  # (N_clip, H, T*L, hd)
    values: torch.Tensor  # (N_clip, H, T*L, hd)
    key_mask: torch.Tensor  # (N_clip, T*L) bool, True = a real frame's token


def decoder_states(
    decoder: PairwiseMatchingDecoder, image_tokens: torch.Tensor, video_tokens: torch.Tensor, frame_mask: torch.Tensor
) -> DecoderStates:
    """`DecoderStates` of every image (N_img, L, W) and every clip (N_clip, T, L, W) with its (N_clip, T) mask."""
    return DecoderStates(decoder.image_states(image_tokens), *decoder.clip_states(video_tokens, frame_mask))


def _state_pair_scores(
    decoder: PairwiseMatchingDecoder, states: DecoderStates, ii: torch.Tensor, jj: torch.Tensor
) -> torch.Tensor:
    # Indexing inside the recomputed function: only the shared states and the indices are kept per chunk.
    return _score_rows(decoder, states, ii, jj, return_attention=False).scores


def _score_rows(
    decoder: PairwiseMatchingDecoder, states: DecoderStates, ii: torch.Tensor, jj: torch.Tensor, return_attention: bool
) -> DecoderOutput:
    return decoder.score_states(
        states.image_states.index_select(0, ii), states.keys.index_select(0, jj), states.values.index_select(0, jj),
        states.key_mask.index_select(0, jj), return_attention=return_attention,
    )  # fmt: skip


def score_state_pairs(
    decoder: PairwiseMatchingDecoder,
    states: DecoderStates,
    image_index: torch.Tensor,
    clip_index: torch.Tensor,
    chunk_size: int | None = None,
    return_attention: bool = False,
) -> DecoderOutput:
    """Scores (P,) of the pairs (image row image_index[p], clip row clip_index[p]) of shared ``states`` and, when
    asked, their cross-attention (P, H, L, T*L).

    ``chunk_size=None`` (``loss.pmd_pass: batched``): every pair in one decoder call, so one gather of the rows'
    keys/values and one scatter of their gradients, whatever the number of pairs. An int (``chunked``, for cards
    whose memory does not hold every pair's attention at once): calls of ``chunk_size`` pairs; without the attention
    maps, every chunk but the last is recomputed in the backward pass instead of keeping its activations, so the
    memory grows with the chunk, not with the pairs. Pairs never interact: the result does not depend on the path.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None (one call), got {chunk_size}")
    total = image_index.numel()
    if total == 0:
        return DecoderOutput(states.image_states.new_zeros(0), None)
    if chunk_size is None or chunk_size >= total:
        return _score_rows(decoder, states, image_index, clip_index, return_attention)
    scores, attentions = [], []
    # The last chunk keeps its activations: the backward reaches it first and frees them before any recomputation,
    # so the peak is the same and its recompute is saved. The remainder chunk comes first, so the one kept is full.
    recompute = torch.is_grad_enabled() and not return_attention
    starts = [0, *range(total % chunk_size or chunk_size, total, chunk_size)]
    for start, end in zip(starts, [*starts[1:], total]):
        ii, jj = image_index[start:end], clip_index[start:end]
        if recompute and end < total:
            scores.append(checkpoint(_state_pair_scores, decoder, states, ii, jj, use_reentrant=False))
            continue
        out = _score_rows(decoder, states, ii, jj, return_attention)
        scores.append(out.scores)
        if return_attention:
            attentions.append(out.attention)
    return DecoderOutput(torch.cat(scores), torch.cat(attentions) if return_attention else None)


def score_pairs(
    decoder: PairwiseMatchingDecoder,
    image_tokens: torch.Tensor,
    video_tokens: torch.Tensor,
    frame_mask: torch.Tensor,
    image_index: torch.Tensor,
    clip_index: torch.Tensor,
    chunk_size: int | None,
    return_attention: bool = False,
) -> DecoderOutput:
    """Run the decoder on the pairs (image_tokens[image_index[p]], clip clip_index[p]), ``chunk_size`` pairs a call
    (None: all in one call); see `score_state_pairs`.

    Args:
        image_tokens: (N_img, L, W); video_tokens: (N_clip, T, L, W); frame_mask: (N_clip, T).
        image_index, clip_index: (P,) long.
    Returns:
        scores (P,) and, when asked, attention (P, H, L, T*L).

    The parts of the decoder that depend on one side only (`DecoderStates`) run once per row of that side when
    there are at least as many pairs as rows, else once per pair: never more often than once per distinct row would
    in the worst case, and without ``torch.unique``, whose output size depends on the values (a host sync, and no
    single graph for the step).
    """
    if image_index.numel() == 0:
        return DecoderOutput(image_tokens.new_zeros(0), None)
    image_rows, image_index = _rows_to_run(image_index, image_tokens.shape[0])
    clip_rows, clip_index = _rows_to_run(clip_index, video_tokens.shape[0])
    states = decoder_states(
        decoder, _take(image_tokens, image_rows), _take(video_tokens, clip_rows), _take(frame_mask, clip_rows)
    )
    return score_state_pairs(decoder, states, image_index, clip_index, chunk_size, return_attention)
