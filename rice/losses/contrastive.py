"""Instance contrastive loss (ICL): symmetric InfoNCE between clip and shop-image embeddings."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class InstanceContrastiveLoss(nn.Module):
    """ICL of RICE: L = 1/2 [CE(s^2 V U^T, diag) + CE(s^2 U V^T, diag)] over the global batch.

    Every rank gathers all features (with gradient) and computes the same loss: the mean over all global
    positive pairs. ``gather`` concatenates a tensor across ranks (``rice.distributed.all_gather_with_grad``);
    its backward sums gradients over ranks and DDP's averaging divides by world size, so the parameter
    gradients equal those of one process on the whole batch (covered by the 2-rank parity test).

    With ``product_ids`` given (beyond the paper), a pair of a clip and an image of the same product that are
    not each other's positive is no negative: it is removed from both softmax denominators.

    Args:
        gather: concatenates a tensor over ranks with gradient; None = single process.
        gather_no_grad: the same without gradient (for the product ids); None = ``gather``.
    """

    def __init__(
        self,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        gather_no_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.gather = gather or _identity
        self.gather_no_grad = gather_no_grad or self.gather

    def forward(
        self,
        image_features: torch.Tensor,
        video_features: torch.Tensor,
        logit_scale: torch.Tensor,
        product_ids: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Args: image_features (B, D) and video_features (B, D), L2-normalised; logit_scale: scalar s;
        product_ids: (B,) int64 product of each pair, or None to treat every other pair as a negative."""
        images = self.gather(image_features)  # (N, D), N = global batch
        videos = self.gather(video_features)
        logits = logit_scale.square() * videos @ images.t()  # (N, N): row = clip, column = image
        if product_ids is not None:
            logits = logits.masked_fill(same_product_mask(self.gather_no_grad(product_ids)), float("-inf"))
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def same_product_mask(product_ids: torch.Tensor) -> torch.Tensor:
    """(N,) ids -> (N, N) bool, True where i != j show the same product (duplicates that are not negatives)."""
    same = product_ids[:, None] == product_ids[None, :]
    return same & ~torch.eye(len(product_ids), dtype=torch.bool, device=product_ids.device)
