"""`data.train_frame_sampling`: official = the public code's fixed training frames, jitter = rice's random frame per
segment. The reference is the public prepare script's rule, written here with numpy: of n (1-fps) frames, keep
``np.linspace(0, n, 10, endpoint=False, dtype=int)`` when n > 10, else all n; the tail drop then cuts that list."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rice.config import build_config
from rice.data import MovingFashionPairs, MovingFashionQueries, build_transform
from rice.data.factory import build_train_dataset
from rice.data.sampling import FramePolicy, sample_frame_indices

T = 10


def _public_frames(n: int, num_frames: int = T) -> list[int]:
    if n > num_frames:
        return np.linspace(0, n, num=num_frames, endpoint=False, dtype=int).tolist()
    return list(range(n))


@pytest.mark.parametrize("n", [*range(1, 40), 57, 99, 100, 101, 333, 3601])
def test_official_training_frames_are_the_public_scripts(n):
    for seed in range(3):
        picks = sample_frame_indices(n, T, train=True, rng=random.Random(seed), train_sampling="official")
        assert picks == _public_frames(n)


def test_official_training_frames_are_the_same_every_epoch_and_still_tail_dropped():
    policy = FramePolicy(tail_drop="full", train_sampling="official")
    seen = {tuple(policy.indices(37, T, True, 0.5, random.Random(epoch))) for epoch in range(40)}
    full = tuple(_public_frames(37))
    assert full in seen and len(seen) > 1  # some epochs cut the tail ...
    assert all(picks == full[: len(picks)] for picks in seen)  # ... and only ever keep the head of the fixed list


def test_jitter_draws_other_frames_per_epoch():
    picks = {tuple(sample_frame_indices(37, T, train=True, rng=random.Random(s))) for s in range(20)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="train frame sampling"):
        sample_frame_indices(37, T, train=True, train_sampling="fixed")


def test_a_training_dataset_reads_the_official_frames(tiny_dataset: Path):
    """End to end through decoding: with the eval transform (no random crop), the official training clip is the
    eval clip of floor(i*n/T) frames, whatever the seed or epoch; jitter's is not always."""
    cfg = build_config(overrides=[f"data.root={tiny_dataset}", "data.num_frames=4", "data.tail_drop_prob=0",
                                  "data.train_frame_sampling=official"])  # fmt: skip
    built = build_train_dataset(cfg.data, _Preprocess(), seed=0)
    assert built.frame_policy.train_sampling == "official"
    still = build_transform(32, train=False, resize_size=36)
    expected = MovingFashionQueries(tiny_dataset, "train", num_frames=4, transform=still,
                                    frame_policy=FramePolicy(eval_sampling="official"))  # fmt: skip
    video = {q[0]: i for i, q in enumerate(expected.queries)}
    official = MovingFashionPairs(tiny_dataset, num_frames=4, transform=still, seed=0, tail_drop_prob=0.0,
                                  frame_policy=FramePolicy(train_sampling="official"))  # fmt: skip
    jitter = MovingFashionPairs(tiny_dataset, num_frames=4, transform=still, seed=0, tail_drop_prob=0.0)
    jitter_differs = False
    for epoch in range(3):
        official.set_epoch(epoch)
        jitter.set_epoch(epoch)
        for idx in range(len(official)):
            target = expected[video[official.pairs[idx][0]]]["frames"]
            assert torch.equal(official[idx]["frames"], target)
            jitter_differs |= not torch.equal(jitter[idx]["frames"], target)
    assert jitter_differs


class _Preprocess:
    input_size, resize_size, mean, std = 32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
