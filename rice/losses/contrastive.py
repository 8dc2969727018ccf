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
    """

    def __init__(self, gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.gather = gather or _identity

    def forward(
        self, image_features: torch.Tensor, video_features: torch.Tensor, logit_scale: torch.Tensor, **_: object
    ) -> torch.Tensor:
        """Args: image_features (B, D) and video_features (B, D), L2-normalised; logit_scale: scalar s."""
        images = self.gather(image_features)  # (N, D), N = global batch
        videos = self.gather(video_features)
        logits = logit_scale.square() * videos @ images.t()  # (N, N): row = clip, column = image
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
