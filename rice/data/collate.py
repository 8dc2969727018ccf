"""Batching dataset items (docs/internals.md, "Dataset items")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def collate_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor fields, keep other fields as lists, concatenate the ``skipped`` lists.

    Returns:
        e.g. for training pairs: ``frames`` (B, T, 3, S, S), ``frame_mask`` (B, T), ``image`` (B, 3, S, S),
        ``video_id``/``image_id`` lists of B strings, ``skipped`` one flat list of ``"path: reason"``.
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
    return batch
