"""Re-ranking the dual encoder's top-K with the PMD decoder's match score (an extra; the paper does not).

The gallery's tokens are computed once (``gallery_tokens``) and kept; each query batch is encoded once to its frame
tokens, and its Q*K (query, candidate) pairs go through the decoder in chunks. For MovingFashion (1,341 gallery
images, K=10) that is 13,410 decoder pairs for the whole test set, a few seconds on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rice.models.decoder import PairwiseMatchingDecoder, score_pairs


@torch.no_grad()
def gallery_tokens(model: torch.nn.Module, image_batches: Iterable[torch.Tensor], dtype: torch.dtype | None = None):
    """Encoder tokens (G, L, W) of every gallery image, in batch order; ``dtype`` (e.g. float16) halves the cache."""
    device = next(model.parameters()).device
    parts = [model.encode_image_tokens(images.to(device))[1] for images in image_batches]
    tokens = torch.cat(parts)
    return tokens if dtype is None else tokens.to(dtype)


@torch.no_grad()
def rerank_topk(
    decoder: PairwiseMatchingDecoder,
    query_tokens: torch.Tensor,
    query_mask: torch.Tensor,
    gallery_tokens: torch.Tensor,
    topk_indices: torch.Tensor,
    topk_scores: torch.Tensor | None = None,
    fusion: float = 0.0,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-score and re-sort each query's candidates.

    Args:
        query_tokens: (Q, T, L, W) frame tokens; query_mask: (Q, T) bool.
        gallery_tokens: (G, L, W), may live on another device or dtype (moved per chunk).
        topk_indices: (Q, K) gallery indices from the dual encoder; topk_scores: (Q, K) their cosine scores.
        fusion: weight of the dual-encoder cosine; the score is ``fusion * cos + (1 - fusion) * pmd / scale``, both
            terms cosines in [-1, 1] (the PMD score is ``scale * cos`` with scale 10). ``fusion > 0`` needs topk_scores.
    Returns:
        (Q, K) gallery indices sorted by the new score (descending, stable) and those scores.
    """
    if not 0.0 <= fusion <= 1.0:
        raise ValueError(f"fusion must be in [0, 1], got {fusion}")
    if fusion > 0 and topk_scores is None:
        raise ValueError("fusion > 0 needs the dual-encoder scores of the top-K (topk_scores)")
    q, k = topk_indices.shape
    device = query_tokens.device
    candidates = topk_indices.to(device)
    scores = torch.empty(q * k, device=device, dtype=torch.float32)
    flat = candidates.reshape(-1)
    query_index = torch.arange(q, device=device).repeat_interleave(k)
    for start in range(0, q * k, chunk_size):
        gal = flat[start : start + chunk_size]
        image_tokens = gallery_tokens[gal.to(gallery_tokens.device)].to(device=device, dtype=query_tokens.dtype)
        local = torch.arange(gal.numel(), device=device)
        qi = query_index[start : start + chunk_size]
        out = score_pairs(decoder, image_tokens, query_tokens[qi], query_mask[qi], local, local, chunk_size)
        scores[start : start + gal.numel()] = out.scores.float()
    scores = scores.view(q, k) / decoder.score_scale
    if fusion > 0:
        scores = fusion * topk_scores.to(device).float() + (1.0 - fusion) * scores
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order), scores.gather(1, order)


@torch.no_grad()
def rerank(
    model: torch.nn.Module,
    query_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    gallery_token_cache: torch.Tensor,
    topk_indices: torch.Tensor,
    topk_scores: torch.Tensor | None = None,
    fusion: float = 0.0,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-rank every query's top-K with ``model.decoder``.

    Args:
        model: a ``RiceModel`` with a decoder.
        query_batches: (frames (B, T, 3, S, S), frame_mask (B, T)) in the same order as the rows of topk_indices.
        gallery_token_cache: (G, L, W) from ``gallery_tokens`` (computed once per gallery).
        topk_indices, topk_scores: (Q, K) dual-encoder top-K (indices into the gallery) and cosine scores.
    Returns:
        (Q, K) new orders and scores (on the CPU).
    """
    if getattr(model, "decoder", None) is None:
        raise ValueError("re-ranking needs the PMD decoder: use a checkpoint trained with --losses icl,pmd[,pfr]")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out_idx, out_scores, row = [], [], 0
    for frames, frame_mask in query_batches:
        frames, frame_mask = frames.to(device), frame_mask.to(device).bool()
        _, query_tokens = model.encode_video_tokens(frames, frame_mask)
        rows = slice(row, row + frames.shape[0])
        idx, sc = rerank_topk(
            model.decoder, query_tokens, frame_mask, gallery_token_cache, topk_indices[rows],
            None if topk_scores is None else topk_scores[rows], fusion, chunk_size,
        )  # fmt: skip
        out_idx.append(idx.cpu())
        out_scores.append(sc.cpu())
        row += frames.shape[0]
    model.train(was_training)
    if row != topk_indices.shape[0]:
        raise ValueError(f"{row} queries in the batches but {topk_indices.shape[0]} rows of top-K indices")
    return torch.cat(out_idx), torch.cat(out_scores)
