"""Patch feature reconstruction loss (PFR): rebuild the image tokens from the clip tokens with the PMD attention."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rice.models.decoder import PairwiseMatchingDecoder, score_pairs


class PatchFeatureReconstructionLoss(nn.Module):
    """PFR loss on the positive (image, own clip) pairs.

    The cross-attention probabilities of the decoder's cross block (B, H, L_img, T*L_vid) are scaled by
    sqrt(head_dim) and merged over heads by the decoder's 1x1 convolutions, then a softmax over the clip's tokens
    gives W (B, L_img, T*L_vid): over its valid tokens only (``softmax_keys="valid"``), or over all T*L_vid keys,
    padded frames included (``"all"``, the public code: a padded key's attention is 0, so its merged logit is the
    convolutions' value at 0, ``ReLU(w2 . ReLU(b1) + b2)``, 0 at initialisation, and it takes a share of W while its
    zeroed tokens add nothing to the reconstruction). The reconstruction W @ sg(X_video) is compared with
    sg(Y_image) by MSE, averaged over all elements of the local batch (B * L_img * W values). Both feature sets are
    stop-gradient, so only the attention path (decoder Q/K, the head-merging convs, and the encoder through Q/K)
    learns from it.
    DDP's gradient averaging over equal local batches makes it the mean over the global batch.

    Args:
        chunk_size: positive pairs per decoder call when the attention is not passed in (None: one call).
        softmax_keys: "valid" (padded frames masked out of the softmax) or "all" (the public code).
    """

    def __init__(self, chunk_size: int | None = None, softmax_keys: str = "valid"):
        super().__init__()
        if softmax_keys not in ("valid", "all"):
            raise ValueError(f"PFR softmax_keys {softmax_keys!r} is unknown; choose 'valid' or 'all'")
        self.chunk_size = chunk_size
        self.softmax_keys = softmax_keys

    def forward(
        self,
        image_tokens: torch.Tensor,
        video_tokens: torch.Tensor,
        frame_mask: torch.Tensor,
        decoder: PairwiseMatchingDecoder | None,
        positive_attention: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Args:
            image_tokens: (B, L, W); video_tokens: (B, T, L, W); frame_mask: (B, T) bool.
            decoder: the model's PMD decoder, built with ``reconstruction=True``.
            positive_attention: (B, H, L, T*L) cross-attention of the positive pairs if already computed.
        """
        if decoder is None:
            raise ValueError("the PFR loss needs model.decoder; build the model with the decoder (losses incl. 'pfr')")
        batch, frames, l_vid, width = video_tokens.shape
        if positive_attention is None:
            local = torch.arange(batch, device=image_tokens.device)
            positive_attention = score_pairs(
                decoder, image_tokens, video_tokens, frame_mask, local, local, self.chunk_size, return_attention=True
            ).attention
        dtype = torch.promote_types(positive_attention.dtype, torch.float32)  # fp32 at least (under AMP)
        logits = decoder.merge_heads(positive_attention).to(dtype)  # (B, L_img, T*L_vid)
        key_mask = frame_mask.bool().repeat_interleave(l_vid, dim=1)  # (B, T*L_vid)
        if self.softmax_keys == "valid":
            logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        # Padded frames' tokens are zeroed, as the public code does: with "all" they keep their share of W but add
        # nothing (the encoder's tokens of a black padding frame are not zero); with "valid" their weight is 0.
        context = video_tokens.detach().reshape(batch, frames * l_vid, width).to(dtype)
        context = context.masked_fill(~key_mask[:, :, None], 0.0)
        reconstruction = weights @ context  # (B, L_img, W)
        return F.mse_loss(reconstruction, image_tokens.detach().to(dtype))
