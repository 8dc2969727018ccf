"""Pairwise matching loss (PMD): decoder scores of each image against its clip and its hardest negative clips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rice.distributed import rank_or
from rice.models.decoder import DecoderStates, PairwiseMatchingDecoder, decoder_states, score_state_pairs

Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def mine_hard_negatives(
    image_features: torch.Tensor,
    all_video_features: torch.Tensor,
    positive_index: torch.Tensor,
    num_negatives: int,
    excluded: torch.Tensor | None = None,
    return_valid: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The ``num_negatives`` clips most similar (cosine) to each image, its own clip excluded; no gradient.

    Args:
        image_features: (B, D) local images.
        all_video_features: (N, D) the global (all-rank) batch of clips.
        positive_index: (B,) index of each image's own clip in ``all_video_features``.
        excluded: (B, N) bool, clips that may not be negatives (other clips of the same product), or None.
        return_valid: also return (B, K) bool, False where a row ran out of allowed clips.
    Returns:
        (B, K) long indices into the global batch, hardest first (and the valid mask when asked).
    """
    with torch.no_grad():
        sims = F.normalize(image_features.detach().float(), dim=-1) @ F.normalize(
            all_video_features.detach().float(), dim=-1
        ).t()  # (B, N)
        if excluded is not None:
            sims = sims.masked_fill(excluded, float("-inf"))
        sims[torch.arange(sims.shape[0], device=sims.device), positive_index] = float("-inf")
        top = sims.topk(num_negatives, dim=1)
        return (top.indices, top.values > float("-inf")) if return_valid else top.indices


@dataclass
class DecoderPass:
    """The decoder work a training step shares between PMD and PFR (`PairwiseMatchingLoss.decoder_pass`): the
    states of the local images and of the clips of every rank, and the positive pairs' scores (B,) and, for PFR,
    their cross-attention (B, H, L, T*L)."""

    states: DecoderStates
    positive_scores: torch.Tensor
    positive_attention: torch.Tensor | None


class PairwiseMatchingLoss(nn.Module):
    """PMD loss: (1+K)-way cross-entropy over decoder scores, the positive clip first.

    For each local image i, the K hardest negative clips are mined (no gradient) by cos(u_i, v_j) over the global
    batch gathered from every rank, excluding i's own clip. The decoder's per-image and per-clip states are computed
    once (`decoder_pass`); the positive pairs then run as one decoder call and the B*K negatives as another
    (``chunk_size=None``), or in calls of ``chunk_size`` pairs to bound memory; the path does not change the result.

    What is averaged: each rank returns the mean cross-entropy over its B local images. With equal batches per rank,
    DDP's gradient averaging (1/world_size) turns that into the gradient of the mean over all global positives. The
    negatives' tokens come from other ranks through ``gather_with_grad``, whose backward sums each rank's gradient
    into the clip's owner; the owner's DDP average then divides by world_size like every other gradient. No extra
    ``* world_size`` is applied; ``tests/losses/test_pmd_ddp.py`` checks loss and gradients against one process.

    Args:
        num_negatives: K hard negative clips per image (3). Clamped to the global batch size minus one.
        chunk_size: image-clip pairs per decoder call (bounds the memory of one call); None: one call for the
            positives and one for the negatives (``loss.pmd_pass: batched``).
        gather_with_grad / gather_no_grad: concatenate a tensor over ranks along dim 0 (``rice.distributed``).
        rank: this process's rank, or None to ask ``rice.distributed.world_info()`` at each call.
    """

    def __init__(
        self,
        num_negatives: int = 3,
        chunk_size: int | None = None,
        gather_with_grad: Gather | None = None,
        gather_no_grad: Gather | None = None,
        rank: int | None = None,
    ):
        super().__init__()
        if num_negatives < 1 or (chunk_size is not None and chunk_size < 1):
            raise ValueError(f"num_negatives ({num_negatives}) and chunk_size ({chunk_size}) must be >= 1")
        self.num_negatives, self.chunk_size = num_negatives, chunk_size
        self.gather_with_grad = gather_with_grad or _identity
        self.gather_no_grad = gather_no_grad or _identity
        self.rank = rank

    def decoder_pass(
        self,
        decoder: PairwiseMatchingDecoder,
        image_tokens: torch.Tensor,
        video_tokens: torch.Tensor,
        frame_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> DecoderPass:
        """Gather the clips of every rank, compute the decoder states once and score the B positive pairs in one
        call (with their cross-attention for PFR when asked). ``RiceTask`` calls it once per step and hands the
        result to PMD and PFR."""
        batch = image_tokens.shape[0]
        states = decoder_states(
            decoder, image_tokens, self.gather_with_grad(video_tokens), self.gather_no_grad(frame_mask)
        )
        local = torch.arange(batch, device=image_tokens.device)
        positive_index = rank_or(self.rank) * batch + local  # this rank's clips sit at its offset in the gathered batch
        positives = score_state_pairs(decoder, states, local, positive_index, self.chunk_size, return_attention)
        return DecoderPass(states, positives.scores, positives.attention)

    def forward(
        self,
        image_features: torch.Tensor,
        video_features: torch.Tensor,
        image_tokens: torch.Tensor,
        video_tokens: torch.Tensor,
        frame_mask: torch.Tensor,
        decoder: PairwiseMatchingDecoder | None,
        decoder_pass: DecoderPass | None = None,
        product_ids: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Args:
            image_features, video_features: (B, D) local embeddings (used for mining only).
            image_tokens: (B, L, W); video_tokens: (B, T, L, W); frame_mask: (B, T) bool.
            decoder: the model's PMD decoder.
            decoder_pass: this step's `decoder_pass` when already computed (RiceTask shares it with PFR), else
                computed here.
            product_ids: (B,) int64 products; other clips of an image's product are never mined as its negatives
                (a row with fewer than K allowed clips has its missing negatives left out of the softmax).
        """
        if decoder is None:
            raise ValueError("the PMD loss needs model.decoder; build the model with the decoder (losses incl. 'pmd')")
        batch = image_tokens.shape[0]
        if decoder_pass is None:
            decoder_pass = self.decoder_pass(decoder, image_tokens, video_tokens, frame_mask)
        positive_scores = decoder_pass.positive_scores
        all_video_features = self.gather_no_grad(video_features.detach())  # (N, D)
        local = torch.arange(batch, device=image_tokens.device)
        positive_index = rank_or(self.rank) * batch + local
        k = min(self.num_negatives, all_video_features.shape[0] - 1)
        if k < 1:  # a global batch of one pair has no negative: nothing to contrast
            return positive_scores.sum() * 0.0
        excluded = None
        if product_ids is not None:
            excluded = product_ids[:, None] == self.gather_no_grad(product_ids)[None, :]  # (B, N)
        negative_index, valid = mine_hard_negatives(
            image_features, all_video_features, positive_index, k, excluded, return_valid=True
        )  # (B, K) each
        negative_scores = score_state_pairs(
            decoder, decoder_pass.states, local.repeat_interleave(k), negative_index.reshape(-1), self.chunk_size
        ).scores.view(batch, k)
        logits = torch.cat([positive_scores[:, None], negative_scores], dim=1)  # (B, 1+K), positive at 0
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least (under AMP)
        if product_ids is not None:  # a mined "negative" of the same product (no allowed clip left) drops out
            keep = torch.cat([valid.new_ones(batch, 1), valid], dim=1)
            logits = logits.masked_fill(~keep, float("-inf"))
        return F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device=logits.device))
