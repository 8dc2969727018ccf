"""What a training item carries as pixels: normalised floats, uint8 crops, or the JPEG bytes of prepared frames.

``data.normalize_on`` and ``data.decode_device`` choose (docs/internals.md, "Dataset items"):

- ``"float"`` (the default): ``frames`` float32 (T, 3, S, S) and ``image`` (3, S, S), normalised in the worker.
- ``"uint8"`` (``normalize_on: device``): the same crops before normalisation, uint8, zero-padded; the device stage
  (`rice.data.device_stage`) normalises them after the copy, which is a quarter of the bytes to copy.
- ``"jpeg"`` (``decode_device: cuda``): the worker reads each frame's file and draws its crop and flip (so the
  random stream per sample is the one of the other formats) but decodes nothing: ``frames_jpeg`` is a list of
  1-D uint8 tensors (the real frames' files), ``frames_params`` (T, 7) float64 their `CropParams` (`params_row`);
  the device stage decodes them in batches, crops, resizes, flips, jitters and normalises. The shop image comes the
  same way: ``image_jpeg`` a list holding its file's bytes (JPEG, decoded on the device; PNG, decoded by the stage on
  the CPU) and ``image_params`` (7,) its draw.

Training decodes a JPEG of twice the resize size or more at a reduced DCT scale in the worker (PIL's draft mode);
the ``"jpeg"`` items are decoded at full size, so for such files the two paths differ (the full decode is the one
closer to the picture). Prepared frames (256 px short side, resized to 256) are decoded at full size either way.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .media_limits import MAX_PIXELS, MediaError, MediaTooLarge
from .transforms import ClipTransform, CropParams, ImageTransform

ITEM_PIXELS: tuple[str, ...] = ("float", "uint8", "jpeg")
PARAM_FIELDS = 7  # top, left, side, flip, brightness, contrast, saturation


def item_pixels(normalize_on: str, decode_device: str) -> str:
    """The item format that ``data.normalize_on`` / ``data.decode_device`` ask for."""
    if decode_device == "cuda":
        return "jpeg"
    return "uint8" if normalize_on == "device" else "float"


def check_item_pixels(pixels: str) -> str:
    if pixels not in ITEM_PIXELS:
        raise ValueError(f"item pixels {pixels!r} are unknown; choose one of {list(ITEM_PIXELS)}")
    return pixels


def uint8_chw(arrays: np.ndarray) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> uint8 (..., 3, S, S), contiguous (the layout the device stage normalises)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(arrays, -1, -3)))


def params_row(params: CropParams, image_size: int) -> list[float]:
    """A `CropParams` as the 7 numbers the device stage reads (``side`` None = the output size)."""
    return [float(params.top), float(params.left), float(params.side or image_size), float(params.flip),
            *(float(j) for j in params.jitter)]  # fmt: skip


def read_jpeg(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, kinds: tuple[str, ...] = ("JPEG",)
) -> torch.Tensor:
    """The bytes of an image file as a 1-D uint8 tensor, after a header check (no pixel is decoded).

    The header is read with PIL (tens of microseconds): a file that is not one of ``kinds`` (PIL format names) or
    declares more than ``max_pixels`` is refused here, in the worker, as a bad sample, instead of failing a whole
    batch on the device.
    """
    try:
        data = open(path, "rb").read()  # noqa: SIM115 - read at once, closed when the object goes
    except OSError as err:
        raise MediaError(f"{path}: cannot read frame ({err.strerror or type(err).__name__}); rerun `rice prepare`") \
            from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, width, height = img.format, img.width, img.height
    except Exception as err:  # noqa: BLE001 - whatever PIL raises, the file is a bad sample
        raise MediaError(f"{path}: cannot read frame header ({type(err).__name__}); rerun `rice prepare`") from None
    if kind not in kinds:
        raise MediaError(f"{path}: image is {kind}, not {' or '.join(kinds)}: data.decode_device=cuda reads those "
                         "only; prepare frames without --lossless, convert the file, or set data.decode_device=cpu")
    if width * height > max_pixels:
        raise MediaTooLarge(f"{path}: frame of {width}x{height} pixels is over the limit of {max_pixels / 1e6:.1f} MP")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def uint8_image(transform: ImageTransform, image: Image.Image, rng: random.Random | None) -> torch.Tensor:
    """The ``"uint8"`` item of a decoded shop image: its crop (one draw from ``rng``) as uint8 (3, S, S)."""
    return uint8_chw(transform.to_array(image, transform.sample_params(rng)))


def encoded_clip(
    clip_transform: ClipTransform, paths: Sequence[str | os.PathLike[str]], num_frames: int,
    rng: random.Random | None,
) -> dict[str, Any]:
    """The ``"jpeg"`` item fields of a clip: ``frames_jpeg`` the frames' bytes, ``frames_params`` their crop/flip
    draws (T, 7) zero-padded, ``frame_mask`` (T,) True for the frames read.

    The draws are the ones `ClipTransform` makes for the same frames and ``rng`` (it draws after reading)."""
    encoded = [read_jpeg(p) for p in paths]
    image_size = clip_transform.image_transform.image_size
    params = torch.zeros(num_frames, PARAM_FIELDS, dtype=torch.float64)
    for i, p in enumerate(clip_transform.draw_params(len(encoded), rng)):
        params[i] = torch.tensor(params_row(p, image_size), dtype=torch.float64)
    mask = torch.arange(num_frames) < len(encoded)
    return {"frames_jpeg": encoded, "frames_params": params, "frame_mask": mask}


def encoded_image(
    transform: ImageTransform, path: str | os.PathLike[str], rng: random.Random | None
) -> dict[str, torch.Tensor]:
    """The ``"jpeg"`` item fields of a shop image: its bytes (JPEG or PNG) and its crop/flip draw (7,)."""
    data = read_jpeg(path, kinds=("JPEG", "PNG"))
    params = torch.tensor(params_row(transform.sample_params(rng), transform.image_size), dtype=torch.float64)
    return {"image_jpeg": [data], "image_params": params}  # a list: batching keeps it a list (the sizes differ)
