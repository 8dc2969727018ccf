"""Batching dataset items (docs/internals.md, "Dataset items")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def collate_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor fields, keep other fields as lists, concatenate the ``skipped`` lists.

    Returns:
        e.g. for training pairs: ``frames`` (B, T, 3, S, S), ``frame_mask`` (B, T), ``image`` (B, 3, S, S),
        ``video_id``/``image_id`` lists of B strings, ``skipped`` one flat list of ``"path: reason"``; with a
        ``frame_mask``, also ``frame_index`` (V,) int64, the real frames' positions in the flattened B*T frames
        (``rice.models.rice_model.real_frame_index``): found here on the CPU, the training step gets them without
        waiting for the device.
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
        batch["frame_index"] = mask.reshape(-1).nonzero().squeeze(1)  # as real_frame_index (no rice.models import)
    return batch
