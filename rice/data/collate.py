"""Batching dataset items (docs/internals.md, "Dataset items")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def collate_batch(items: Sequence[dict[str, Any]], frame_buckets: int = 0) -> dict[str, Any]:
    """Stack tensor fields, keep other fields as lists, concatenate the ``skipped`` lists.

    Args:
        frame_buckets: 0, or pad ``frame_index`` up to one of this many sizes (`train.frame_buckets`, see
            `frame_index_of`), so that the encoder sees a few batch shapes instead of one per count of real frames.

    Returns:
        e.g. for training pairs: ``frames`` (B, T, 3, S, S), ``frame_mask`` (B, T), ``image`` (B, 3, S, S),
        ``video_id``/``image_id`` lists of B strings, ``skipped`` one flat list of ``"path: reason"``; with a
        ``frame_mask``, also ``frame_index`` (V,) int64, the real frames' positions in the flattened B*T frames
        (``rice.models.rice_model.real_frame_index``): found here on the CPU, the training step gets them without
        waiting for the device; and ``frame_counts``, the real frames of each clip (a list of B ints).
    """
    if not items:
        raise ValueError("collate_batch got an empty list of items")
    keys = list(items[0])
    for item in items[1:]:
        if list(item) != keys:
            raise ValueError(f"items disagree on their fields: {keys} vs {list(item)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        if key == "skipped":
            batch[key] = [entry for value in values for entry in value]
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    mask = batch.get("frame_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        batch["frame_index"] = frame_index_of(mask, frame_buckets)
        # Python ints, so they stay on the host when the tensors move: train.grad_cache slices each chunk's
        # positions out of frame_index with them instead of running nonzero on the device. The mask is a CPU
        # tensor here (loader items), read through numpy: no device is involved.
        batch["frame_counts"] = mask.numpy().sum(1).tolist()
    return batch


def frame_index_of(frame_mask: torch.Tensor, frame_buckets: int = 0) -> torch.Tensor:
    """Positions in the flattened B*T frames that the encoder runs: the real frames (``real_frame_index``), then,
    with ``frame_buckets``, the first padded frames up to the smallest bucket size that holds them all.

    The bucket sizes are ``ceil(k * B * T / frame_buckets)`` for k = 1..frame_buckets (the largest is every
    frame, so a bucket always exists and there are always enough padded frames to fill it). The padded frames'
    outputs are zeroed by ``RiceModel._encode`` (its frame mask), so they influence nothing downstream.
    """
    flat = frame_mask.reshape(-1)
    real = flat.nonzero().squeeze(1)  # as rice.models.rice_model.real_frame_index (no rice.models import here)
    if not frame_buckets:
        return real
    total = flat.numel()
    size = next(s for s in (math.ceil(k * total / frame_buckets) for k in range(1, frame_buckets + 1))
                if s >= real.numel())  # fmt: skip
    padded = (flat == 0).nonzero().squeeze(1)[: size - real.numel()]
    return torch.cat([real, padded])
