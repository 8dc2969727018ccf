"""The one place where a file becomes model input outside the training datasets.

A query (a video, a folder of frames or an image) becomes evenly spaced PIL frames (`query_frames`), and a model's
eval preprocessing record becomes the transform every consumer applies (`eval_transform`): `rice.embed_*`, the
batched embedding of `rice embed` / `rice search`, the service, re-ranking and the scanner all read files through
here, so a file is decoded, sampled and resized the same way wherever it enters a model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from rice.data.frames import IMAGE_SUFFIXES, list_frame_files, load_image
from rice.data.sampling import sample_frame_indices
from rice.data.transforms import ClipTransform, ImageTransform, build_transform
from rice.data.video import MediaError, read_video_frames

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MediaKind = Literal["image", "video"]


def eval_transform(preprocess: Any) -> ImageTransform:
    """The eval transform of a model's ``preprocess`` record (size, mean/std, resize, interpolation)."""
    return build_transform(preprocess.input_size, False, preprocess.mean, preprocess.std, preprocess.resize_size,
                           interpolation=getattr(preprocess, "interpolation", "bilinear"))  # fmt: skip


def media_kind(path: str | os.PathLike[str]) -> MediaKind:
    """``"video"`` for a video file or a folder of frames, ``"image"`` for an image file."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    raise MediaError(
        f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of "
        "frames; pass one of those"
    )


def query_frames(path: str | os.PathLike[str], num_frames: int) -> list[Image.Image]:
    """The frames a query is embedded from: ``num_frames`` evenly spaced frames of a video or a folder of frames
    (segment centres, as at evaluation), or the image itself.

    Raises:
        MediaError: a missing, empty or undecodable file, or an empty folder (one line naming the path).
    """
    path = Path(path)
    if media_kind(path) == "image":
        return [load_image(path)]
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise MediaError(f"{path}: folder holds no frames ({', '.join(IMAGE_SUFFIXES)}); add some or pass a video")
        return [load_image(files[i]) for i in sample_frame_indices(len(files), num_frames, train=False)]
    sample = lambda count: sample_frame_indices(count, num_frames, train=False)  # noqa: E731 - one open, no re-read
    return [Image.fromarray(frame) for frame in read_video_frames(path, sample)]


def image_input(path: str | os.PathLike[str], preprocess: Any) -> torch.Tensor:
    """One shop image file -> float32 (3, S, S), the model's eval preprocessing applied."""
    return eval_transform(preprocess)(load_image(path))


def clip_input(path: str | os.PathLike[str], preprocess: Any, num_frames: int) -> torch.Tensor:
    """A query (video, folder of frames or image) -> float32 (T, 3, S, S) with T <= ``num_frames``."""
    return ClipTransform(eval_transform(preprocess))(query_frames(path, num_frames))
