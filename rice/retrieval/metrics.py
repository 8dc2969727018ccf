"""Recall@k as pure functions over first-hit ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def first_hit_rank(ranked_ids: Sequence[str], gt_ids: Sequence[str] | set[str]) -> int:
    """0-based position of the first ground-truth id in a ranked list, or -1 when there is none."""
    gt = set(gt_ids)
    for position, item in enumerate(ranked_ids):
        if item in gt:
            return position
    return -1


def recall_at_k(first_hit_ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Percent of queries whose first hit is within the top k; a rank of -1 (no hit, no gallery) is a miss.

    The denominator is every query passed in, including unreadable ones.
    """
    ranks = np.asarray(first_hit_ranks)
    if ranks.size == 0:
        return {f"R@{k}": 0.0 for k in ks}
    hit = ranks >= 0
    return {f"R@{k}": 100.0 * int(np.count_nonzero(hit & (ranks < k))) / ranks.size for k in ks}
