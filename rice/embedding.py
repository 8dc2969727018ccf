"""Embed media files: read an image or a video file, apply the model's eval preprocessing, encode.

The one place where a file becomes model input outside the datasets. It imports the data readers but not
``rice.models``, so ``RiceModel.embed_video`` can call it without an import circle (models -> here -> data).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rice.models import RiceModel


@torch.no_grad()
def embed_image(model: RiceModel, path: str | Path) -> torch.Tensor:
    """L2-normalised embedding (D,) of one shop image file, with the model's eval preprocessing."""
    from rice.data import build_transform, load_image

    pre = model.preprocess
    transform = build_transform(pre.input_size, False, pre.mean, pre.std, pre.resize_size,
                                interpolation=pre.interpolation)
    image = transform(load_image(path)).unsqueeze(0)
    device = next(model.parameters()).device
    return model.encode_image(image.to(device))[0].cpu()


@torch.no_grad()
def embed_video(model: RiceModel, path: str | Path, num_frames: int | None = None) -> torch.Tensor:
    """L2-normalised embedding (D,) of one video file (T frames sampled uniformly, as at evaluation)."""
    from rice.config import DataConfig
    from rice.data import ClipTransform, build_transform, read_video_frames, sample_frame_indices, video_num_frames

    pre = model.preprocess
    config = getattr(model, "config", None)
    num_frames = num_frames or (config.data if config is not None else DataConfig()).num_frames
    indices = sample_frame_indices(video_num_frames(path), num_frames, train=False)
    frames = read_video_frames(path, indices)
    transform = build_transform(pre.input_size, False, pre.mean, pre.std, pre.resize_size,
                                interpolation=pre.interpolation)
    clip = ClipTransform(transform)(frames)
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    device = next(model.parameters()).device
    return model.encode_video(clip.unsqueeze(0).to(device), mask.to(device))[0].cpu()
