"""Which frames of a clip to read: uniform temporal sampling and random tail dropping (method.md, "Temporal").

Pure functions of their arguments and a ``random.Random``, so they are seeded and testable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch


def sample_frame_indices(
    num_available: int,
    num_frames: int,
    train: bool,
    rng: random.Random | None = None,
    eval_sampling: str = "centre",
    train_sampling: str = "jitter",
) -> list[int]:
    """Pick up to ``num_frames`` sorted frame indices spread uniformly over ``num_available`` frames.

    The clip is cut into ``num_frames`` equal segments. Eval takes each segment's centre (``eval_sampling="centre"``)
    or its first frame, floor(i * n / T), as the public code's ``prepare_movingfashion.py`` (``"official"``); train
    takes a uniformly random frame inside each segment (``train_sampling="jitter"``), or the same fixed frames
    floor(i * n / T) every epoch (``"official"``: the public code trains on the frames its prepare script chose
    once, offline). A clip shorter than ``num_frames`` gives all its frames;
    the caller pads the rest (`pad_clip`), so ``len(result)`` is the valid count.

    Args:
        num_available: frames in the clip (n >= 1).
        num_frames: T.
        train: random offsets (True) or segment centres (False).
        rng: the random source for ``train``; ``None`` draws from torch's global generator, which the
            DataLoader seeds per worker and epoch.
    """
    if num_available < 1:
        raise ValueError(f"num_available={num_available}: a clip needs at least one frame")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} must be >= 1")
    if num_available <= num_frames:
        return list(range(num_available))
    # Integer segment bounds: disjoint, each holding >= 1 frame, so the indices are distinct and sorted.
    bounds = [i * num_available // num_frames for i in range(num_frames + 1)]
    if train and train_sampling == "official":
        return bounds[:-1]
    if train and train_sampling != "jitter":
        raise ValueError(f"train frame sampling {train_sampling!r} is unknown; choose 'jitter' or 'official'")
    if not train:
        if eval_sampling == "official":
            return bounds[:-1]
        if eval_sampling != "centre":
            raise ValueError(f"eval frame sampling {eval_sampling!r} is unknown; choose 'centre' or 'official'")
        return [(start + end) // 2 for start, end in zip(bounds[:-1], bounds[1:])]
    rng = rng or random.Random(int(torch.randint(0, 2**62, ()).item()))
    return [rng.randrange(start, end) for start, end in zip(bounds[:-1], bounds[1:])]


def drop_tail(
    indices: list[int], prob: float, rng: random.Random | None = None, full_length: int | None = None
) -> list[int]:
    """Training augmentation: with probability ``prob`` keep only the head of the clip.

    With k = len(indices) and p uniform in {0, 0.1, ..., 0.9}, the first ``k - floor(k * p)`` indices are kept
    (never fewer than 1). With ``full_length`` set, only clips of exactly that many frames are cut (the public
    code cuts a clip only when it has the full T frames).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"tail drop probability {prob} must lie in [0, 1]")
    if not indices or prob == 0.0 or (full_length is not None and len(indices) != full_length):
        return list(indices)
    rng = rng or random.Random(int(torch.randint(0, 2**62, ()).item()))
    if rng.random() >= prob:
        return list(indices)
    tenths = rng.randrange(10)  # p = tenths / 10, kept as an integer so floor() is exact
    keep = max(1, len(indices) - (len(indices) * tenths) // 10)
    return list(indices[:keep])


def pad_clip(frames: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (k, 3, S, S) frames to (T, 3, S, S); returns ``(frames, frame_mask (T,) bool)``."""
    count = frames.shape[0]
    if count > num_frames:
        raise ValueError(f"clip has {count} frames, more than num_frames={num_frames}")
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[:count] = True
    if count == num_frames:
        return frames, mask
    padded = frames.new_zeros((num_frames, *frames.shape[1:]))
    padded[:count] = frames
    return padded, mask


@dataclass(frozen=True)
class FramePolicy:
    """Which frames a dataset reads (``data.tail_drop``, ``data.train_frame_sampling`` and ``eval.frame_sampling``
    of the config).

    Attributes:
        eval_sampling: "centre" (segment centres) or "official" (floor(i * n / T), the public code).
        tail_drop: "full" (cut only clips with all T frames, the public code) or "any" (any clip).
        train_sampling: "jitter" (a random frame per segment each epoch) or "official" (floor(i * n / T) every
            epoch, the public code).
    """

    eval_sampling: Literal["centre", "official"] = "centre"
    tail_drop: Literal["any", "full"] = "any"
    train_sampling: Literal["jitter", "official"] = "jitter"

    def indices(
        self, num_available: int, num_frames: int, train: bool, tail_drop_prob: float, rng: random.Random | None
    ) -> list[int]:
        """The sorted frame indices of one clip (at most ``num_frames``)."""
        picks = sample_frame_indices(num_available, num_frames, train, rng, self.eval_sampling, self.train_sampling)
        if not train:
            return picks
        return drop_tail(picks, tail_drop_prob, rng, num_frames if self.tail_drop == "full" else None)
