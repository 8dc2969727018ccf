"""Instance contrastive loss (ICL): symmetric InfoNCE between clip and shop-image embeddings (softmax form), or
SigLIP's sigmoid pairwise loss (sigmoid form, ``loss.icl_form``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rice.distributed import rank_or


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


class SigmoidContrastiveLoss(nn.Module):
    """ICL in its sigmoid pairwise form (SigLIP, Zhai et al. 2023): every (clip, image) pair of the global batch
    is its own binary problem, L = -1/N sum_ij log sigmoid(z_ij (s^2 cos(v_i, u_j) + b)), z_ii = 1, z_ij = -1 for
    i != j, over the N clips and N images of the global batch (``loss.icl_form: sigmoid``).

    No softmax couples a row, so no rank needs the N x N similarity matrix: each rank gathers the image
    embeddings (N, D) and scores only its own B clips against them, a (B, N) block; the ranks' blocks together
    are the N x N pairs exactly once. Each rank returns the global loss (its block's sum plus the others', summed
    with one scalar all-reduce without gradient) and back-propagates ``world_size`` times its own block: the
    gathered images' backward sums the ranks' gradients and DDP's averaging divides by world size, so parameter
    gradients equal one process on the whole batch (the 2-rank test in tests/losses/test_sigmoid_icl.py).

    The bias b is a fixed setting (``loss.sigmoid_bias``), not learned as in SigLIP: the optimizer trains model
    parameters only, and a fixed b keeps checkpoints' layout; the learned scale s still sets the margin. SigLIP
    starts from t = 10, b = -10; rice's default s = 4 gives t = s^2 = 16.

    With ``product_ids``, a pair of the same product that is not a positive is left out (neither term).

    Args:
        bias: b.
        gather: concatenates a tensor over ranks with gradient; None = single process.
        gather_no_grad: the same without gradient (product ids); None = ``gather``.
        reduce_sum: sums a scalar over ranks (no gradient); None = single process.
        rank: this process's rank, or None to ask ``rice.distributed.world_info()`` at each call.
    """

    def __init__(
        self,
        bias: float = -10.0,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        gather_no_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int | None = None,
    ):
        super().__init__()
        self.bias = float(bias)
        self.gather = gather or _identity
        self.gather_no_grad = gather_no_grad or self.gather
        self.reduce_sum = reduce_sum or _identity
        self.rank = rank

    def forward(
        self,
        image_features: torch.Tensor,
        video_features: torch.Tensor,
        logit_scale: torch.Tensor,
        product_ids: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Args as `InstanceContrastiveLoss`: (B, D) L2-normalised features of this rank, the scalar s."""
        images = self.gather(image_features)  # (N, D): every rank's images
        batch, total = video_features.shape[0], images.shape[0]
        world = total // batch
        logits = logit_scale.square() * video_features @ images.t() + self.bias  # (B, N): this rank's clips only
        rows = torch.arange(batch, device=logits.device)
        positives = rank_or(self.rank) * batch + rows  # each clip's own image sits at its rank's offset
        signs = torch.full_like(logits, -1.0).index_put((rows, positives), torch.ones_like(rows, dtype=logits.dtype))
        terms = -F.logsigmoid(signs * logits)
        if product_ids is not None:
            same = product_ids[:, None] == self.gather_no_grad(product_ids)[None, :]  # (B, N)
            same[rows, positives] = False
            terms = terms.masked_fill(same, 0.0)
        local = terms.sum() / total
        if world == 1:
            return local
        global_loss = self.reduce_sum(local.detach())
        return world * local + (global_loss - world * local).detach()  # value: the global loss; gradient: W x own
