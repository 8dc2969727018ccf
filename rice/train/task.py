"""RiceTask: the model plus the selected losses and their weights -> {"loss", "<name>_loss", ...}.

Thin on purpose: optimisation, checkpoints and logging live in rice.train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn as nn

from rice.config import LossConfig
from rice.distributed import all_gather_no_grad, all_gather_with_grad, all_reduce_mean, world_info
from rice.losses import InstanceContrastiveLoss
from rice.losses.contrastive import SigmoidContrastiveLoss
from rice.losses.matching import PairwiseMatchingLoss
from rice.losses.reconstruction import PatchFeatureReconstructionLoss
from rice.models import RiceModel

# Explicit name -> constructor mapping; every constructor takes the LossConfig.
LOSSES: dict[str, Callable[[LossConfig], nn.Module]] = {
    "icl": lambda cfg: (
        InstanceContrastiveLoss(gather=all_gather_with_grad, gather_no_grad=all_gather_no_grad)
        if cfg.icl_form == "softmax"
        else SigmoidContrastiveLoss(cfg.sigmoid_bias, gather=all_gather_with_grad, gather_no_grad=all_gather_no_grad,
                                    reduce_sum=lambda t: all_reduce_mean(t) * world_info().world_size)  # fmt: skip
    ),
    "pmd": lambda cfg: PairwiseMatchingLoss(
        cfg.pmd_negatives, decoder_chunk(cfg), gather_with_grad=all_gather_with_grad, gather_no_grad=all_gather_no_grad
    ),
    "pfr": lambda cfg: PatchFeatureReconstructionLoss(chunk_size=decoder_chunk(cfg), softmax_keys=cfg.pfr_softmax),
}


def decoder_chunk(cfg: LossConfig) -> int | None:
    """Pairs per decoder call: None (all of them in one call) unless ``loss.pmd_pass`` is ``chunked``."""
    return cfg.pmd_chunk_size if cfg.pmd_pass == "chunked" else None


class RiceTask(nn.Module):
    def __init__(self, model: RiceModel, cfg: LossConfig):
        super().__init__()
        missing = [name for name in cfg.losses if name not in LOSSES]
        if missing:
            raise ValueError(f"losses {missing} are not available; choose from {sorted(LOSSES)}")
        self.model = model
        self.losses = nn.ModuleDict({name: LOSSES[name](cfg) for name in cfg.losses})
        self.weights = {name: float(cfg.weights.get(name, 1.0)) for name in cfg.losses}
        self.needs_tokens = any(name != "icl" for name in cfg.losses)
        self.mask_same_product = cfg.mask_same_product
        if self.needs_tokens and model.decoder is None:
            raise ValueError(f"losses {cfg.losses} need the PMD decoder; build_model(..., with_decoder=True)")
        if "pfr" in cfg.losses and getattr(model.decoder, "head_merge", None) is None:
            raise ValueError("'pfr' needs the decoder's head-merging convs; build_model(..., with_reconstruction=True)")

    def forward(
        self,
        images: torch.Tensor,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        product_ids: torch.Tensor | None = None,
        frame_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args: images (B, 3, S, S), frames (B, T, 3, S, S), frame_mask (B, T); product_ids (B,) int64 (see
        `product_keys`) when ``loss.mask_same_product`` is on, so duplicates of a product are not negatives;
        frame_index (V,) the real frames' positions from the loader (``batch["frame_index"]``), so that the step
        never waits for the device; None computes them from ``frame_mask`` (a host sync on a GPU)."""
        out = self.model(images, frames, frame_mask, return_tokens=self.needs_tokens, frame_index=frame_index)
        return self.losses_from_outputs(out, frame_mask, product_ids)

    def losses_from_outputs(
        self, out: dict[str, torch.Tensor], frame_mask: torch.Tensor, product_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The losses of a batch from the model's training outputs (``RiceModel.forward``); gradient caching
        (rice.train.grad_cache) calls it on embeddings computed chunk by chunk."""
        if self.mask_same_product:
            if product_ids is None:
                raise ValueError("loss.mask_same_product needs product_ids: pass product_keys(batch['image_id'])")
            out["product_ids"] = product_ids
        results: dict[str, torch.Tensor] = {}
        if "pmd" in self.losses:
            # One decoder pass for both losses: the image and clip states once, the positive pairs in one call with
            # the cross-attention that PFR reads; PMD adds its mined negatives on the same states.
            shared = self.losses["pmd"].decoder_pass(
                self.model.decoder, out["image_tokens"], out["video_tokens"], frame_mask,
                return_attention="pfr" in self.losses,
            )  # fmt: skip
            out.update(decoder_pass=shared, positive_attention=shared.positive_attention)
        # (LossConfig refuses pfr without pmd; PFR alone, as a module, scores its positive pairs itself)
        for name, loss_fn in self.losses.items():
            results[f"{name}_loss"] = loss_fn(**out, decoder=self.model.decoder)
        results["loss"] = sum(self.weights[name] * results[f"{name}_loss"] for name in self.losses)
        return results


def product_keys(image_ids: Sequence[str]) -> torch.Tensor:
    """(B,) int64 product keys from the shop image ids of a batch, equal on every rank for equal ids.

    Pairs that share their shop image show the same product (MovingFashion products with several videos, shared
    LPR shop images). A stable 63-bit hash, not Python's salted ``hash``, so the ranks agree.
    """
    keys = [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") >> 1 for i in image_ids]
    return torch.tensor(keys, dtype=torch.int64)
