"""Image and clip preprocessing (method.md): square resize, crop, flip, CLIP normalisation.

Eval reproduces the official preprocessing: PIL ``resize((r, r), BILINEAR)`` (antialiased), centre crop,
CLIP mean/std. Train takes a random crop and a horizontal flip instead. By default a clip gets ONE crop and flip
shared by all its frames (temporal consistency); ``per_frame_crops=True`` draws one per frame, as the public code
(each frame goes through the image transform on its own), which is also a stronger augmentation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

ImageLike = Image.Image | np.ndarray


def default_resize_size(image_size: int) -> int:
    """224 -> 256: the resize that the official 256/224 recipe uses, for any crop size."""
    return int(round(image_size * 256 / 224))


@dataclass(frozen=True)
class CropParams:
    top: int
    left: int
    flip: bool
    jitter: tuple[float, float, float] = (1.0, 1.0, 1.0)  # brightness, contrast, saturation factors (1 = none)
    side: int | None = None  # crop side before the resize to the output size; None = the output size (no resize)


def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    array = np.asarray(img)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected a PIL image or a uint8 (H, W, 3) array, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


# PIL's resampling filters by the names timm's pretrained configs (and `Preprocess.interpolation`) use.
RESAMPLING = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
              "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}  # fmt: skip


class ImageTransform:
    """PIL/uint8 image -> float32 (3, S, S) normalised tensor.

    Args:
        image_size: crop size S.
        train: random crop + horizontal flip (True) or centre crop (False).
        mean, std: per-channel normalisation (RGB, in [0, 1] units).
        resize_size: the square resize before cropping; ``None`` = round(S * 256 / 224).
        per_frame_crops: `ClipTransform` draws a crop/flip per frame instead of one per clip (train only).
        color_jitter: train only: brightness, contrast and saturation factors drawn uniformly in
            [1 - j, 1 + j] (0 = off), so the model cannot rely on a clip's lighting.
        crop_scale: train only: (low, high) share of the resized image's area that a square crop covers, drawn
            uniformly, the crop then resized to S (torchvision's RandomResizedCrop, square). ``None`` = a plain
            S x S crop. Scale changes of the product are what a clip's few pixels can not teach otherwise.
        interpolation: the resampling filter of the resize (a `RESAMPLING` name): the one the encoder's weights
            were trained with (bicubic for the timm towers of docs/models.md, bilinear for CLIP ViT-B/32's rice).
    """

    def __init__(
        self,
        image_size: int,
        train: bool,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        resize_size: int | None = None,
        per_frame_crops: bool = False,
        color_jitter: float = 0.0,
        crop_scale: tuple[float, float] | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        self.image_size = int(image_size)
        if interpolation not in RESAMPLING:
            raise ValueError(f"interpolation {interpolation!r} is none of {sorted(RESAMPLING)}")
        self.interpolation = interpolation
        self._resample = RESAMPLING[interpolation]
        if crop_scale is not None and not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale={crop_scale} must satisfy 0 < low <= high <= 1")
        self.crop_scale = tuple(float(c) for c in crop_scale) if crop_scale is not None and train else None
        self.per_frame_crops = bool(per_frame_crops) and train
        if not 0.0 <= color_jitter < 1.0:
            raise ValueError(f"color_jitter={color_jitter} must lie in [0, 1)")
        self.color_jitter = float(color_jitter) if train else 0.0
        self.resize_size = int(resize_size) if resize_size is not None else default_resize_size(self.image_size)
        if self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} must be >= image_size {self.image_size}")
        self.train = train
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(image_size={self.image_size}, resize_size={self.resize_size}, train={self.train}"
            + (", per_frame_crops=True)" if self.per_frame_crops else ")")
        )

    def sample_params(self, rng: random.Random | None = None) -> CropParams:
        """Crop offsets and flip: random for train (from ``rng``, or torch's RNG when None), centred for eval."""
        margin = self.resize_size - self.image_size
        if not self.train:
            offset = int(round(margin / 2.0))  # torchvision CenterCrop's rounding
            return CropParams(top=offset, left=offset, flip=False)
        side = None
        if self.crop_scale is not None:  # drawn first; without crop_scale the draws are what they always were
            low, high = self.crop_scale
            share = float(torch.empty(()).uniform_(low, high)) if rng is None else rng.uniform(low, high)
            side = max(1, min(self.resize_size, int(round(self.resize_size * share**0.5))))
            margin = self.resize_size - side
        if rng is None:
            top, left, flip = torch.randint(0, margin + 1, (2,)).tolist() + [bool(torch.rand(()) < 0.5)]
            params = CropParams(top=int(top), left=int(left), flip=bool(flip), side=side)
        else:
            params = CropParams(rng.randint(0, margin), rng.randint(0, margin), rng.random() < 0.5, side=side)
        if self.color_jitter:  # drawn after the crop, so crops stay what they were without jitter
            low, high = 1.0 - self.color_jitter, 1.0 + self.color_jitter
            if rng is None:
                factors = tuple(torch.empty(3).uniform_(low, high).tolist())
            else:
                factors = (rng.uniform(low, high), rng.uniform(low, high), rng.uniform(low, high))
            params = CropParams(params.top, params.left, params.flip, factors, side)  # type: ignore[arg-type]
        return params

    def to_array(self, img: ImageLike, params: CropParams) -> np.ndarray:
        """Resize, crop and flip; uint8 (S, S, 3)."""
        pil = _to_pil(img)
        size = self.resize_size
        side = params.side or self.image_size
        if side != self.image_size:
            # A scale crop: the crop's window in resized coordinates, mapped back onto the source and resampled
            # once to S x S (resizing, cropping and resizing again cost twice as much and blur twice).
            sx, sy = pil.width / size, pil.height / size
            box = (params.left * sx, params.top * sy, (params.left + side) * sx, (params.top + side) * sy)
            array = np.asarray(pil.resize((self.image_size, self.image_size), self._resample, box=box))
        else:
            if pil.size != (size, size):
                pil = pil.resize((size, size), self._resample)
            array = np.asarray(pil)[params.top : params.top + side, params.left : params.left + side]
        if params.jitter != (1.0, 1.0, 1.0):
            array = _jitter(array, *params.jitter)
        return array[:, ::-1] if params.flip else array

    def normalize(self, arrays: np.ndarray) -> torch.Tensor:
        """uint8 (..., S, S, 3) -> float32 (..., 3, S, S) normalised."""
        # np.require copies only a read-only or strided input (torch refuses to wrap read-only memory silently).
        tensor = torch.from_numpy(np.require(arrays, requirements=["C", "W"])).movedim(-1, -3).float().div_(255.0)
        return tensor.sub_(self._mean).mul_(self._inv_std)

    def apply(self, img: ImageLike, params: CropParams) -> torch.Tensor:
        return self.normalize(self.to_array(img, params))

    def __call__(self, img: ImageLike, rng: random.Random | None = None) -> torch.Tensor:
        return self.apply(img, self.sample_params(rng))


def _jitter(array: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """uint8 (S, S, 3) -> uint8: scale brightness, then contrast about the mean, then saturation about the grey."""
    x = array.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = grey[..., None] + (x - grey[..., None]) * saturation
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


class ClipTransform:
    """Frames of one clip -> float32 (k, 3, S, S), one crop/flip for all frames (or one per frame when the image
    transform has ``per_frame_crops``).

    Accepts a list of PIL images / uint8 (H, W, 3) arrays, or one uint8 (k, H, W, 3) array.
    """

    def __init__(self, image_transform: ImageTransform) -> None:
        self.image_transform = image_transform

    def __repr__(self) -> str:
        return f"ClipTransform({self.image_transform!r})"

    def draw_params(self, count: int, rng: random.Random | None = None) -> list[CropParams]:
        """The crop/flip of each of ``count`` frames: one draw for the clip, or one per frame."""
        transform = self.image_transform
        if transform.per_frame_crops:
            return [transform.sample_params(rng) for _ in range(count)]
        return [transform.sample_params(rng)] * count if count else []

    def arrays(self, frames: Sequence[ImageLike] | np.ndarray, rng: random.Random | None = None) -> np.ndarray:
        """Resized, cropped, flipped frames before normalisation: uint8 (k, S, S, 3)."""
        size = self.image_transform.image_size
        if len(frames) == 0:
            return np.zeros((0, size, size, 3), dtype=np.uint8)
        params = self.draw_params(len(frames), rng)
        return np.stack([self.image_transform.to_array(frame, p) for frame, p in zip(frames, params, strict=True)])

    def __call__(self, frames: Sequence[ImageLike] | np.ndarray, rng: random.Random | None = None) -> torch.Tensor:
        return self.image_transform.normalize(self.arrays(frames, rng))


SHOP_AUGMENTS = ("frames", "crop_flip", "none")


def shop_image_transform(frames: ImageTransform, augment: str) -> ImageTransform:
    """The training transform of the shop image, given the frames' (``data.shop_augment``).

    ``frames``: the same transform (the public code's pairing: one random crop and flip each). ``crop_flip``: only
    the random crop and flip, without the frames' colour jitter and scale crops. ``none``: the eval transform
    (centre crop). The shop image is what every clip is matched against, and at test time it arrives clean: its
    colours and its silhouette are the product's, so jittering or cropping it teaches the model to discount the
    very cues that tell similar products apart (measured on the hard synthetic data, rice/train/demo.py).
    """
    if augment not in SHOP_AUGMENTS:
        raise ValueError(f"shop image augment {augment!r} is unknown; choose one of {list(SHOP_AUGMENTS)}")
    if augment == "frames" or not frames.train:
        return frames
    return ImageTransform(frames.image_size, augment == "crop_flip", frames.mean, frames.std, frames.resize_size,
                          interpolation=frames.interpolation)


def build_transform(
    image_size: int,
    train: bool,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    resize_size: int | None = None,
    per_frame_crops: bool = False,
    color_jitter: float = 0.0,
    crop_scale: tuple[float, float] | None = None,
    interpolation: str = "bilinear",
) -> ImageTransform:
    """The image transform; wrap it in `ClipTransform` for clips (datasets do this themselves)."""
    return ImageTransform(image_size, train, mean, std, resize_size, per_frame_crops, color_jitter, crop_scale,
                          interpolation)  # fmt: skip
