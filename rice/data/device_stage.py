"""The device stage: a copied batch's uint8 crops or JPEG bytes -> the normalised float tensors the step reads.

With ``data.normalize_on: device`` the training items carry uint8 crops (`rice.data.pixel_items`); here they become
``(x / 255 - mean) / std`` in float32 on the training device, the same operations in the same order as
`ImageTransform.normalize` in a worker, so the step sees the same numbers (bit for bit on the CPU). Padded frames
are zeros after normalisation, as `pad_clip` writes them on the float path.

With ``data.decode_device: cuda`` the items carry the prepared frames' JPEG bytes and the crop/flip drawn in the
worker. The whole batch is decoded at once (torchvision's ``decode_jpeg`` on the training device: nvJPEG on a GPU),
then each frame is resized, cropped and flipped by two matrix products that reproduce PIL's resampling
(`rice.data.device_resample`), colour-jittered as `rice.data.transforms._jitter` does, and normalised.
Shop images come the same way (their bytes and draws); a PNG shop image is decoded on the CPU here, then copied.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .device_resample import resample, resample_weights
from .pixel_items import PARAM_FIELDS
from .transforms import ImageTransform

# Frames resampled per matrix product: float64 copies of a chunk of decoded frames (3 x 256 x 455 x 8 bytes, about
# 2.8 MB each) bound the stage's memory whatever the batch.
RESAMPLE_CHUNK = 64
_GREY = (0.299, 0.587, 0.114)


class DeviceStage:
    """Normalise (and, for ``"jpeg"`` items, decode and augment) a training batch on ``device``.

    Args:
        transform: the frames' image transform (the dataset's ``transform``): its size, resize, filter, mean, std.
        pixels: ``"uint8"`` or ``"jpeg"`` (`rice.data.pixel_items`).
        device: where the batch is, and where JPEGs are decoded.
    """

    def __init__(self, transform: ImageTransform, pixels: str, device: torch.device | str) -> None:
        if pixels not in ("uint8", "jpeg"):
            raise ValueError(f"the device stage takes uint8 or jpeg items, not {pixels!r}")
        if pixels == "jpeg" and transform.interpolation == "nearest":
            raise ValueError("data.decode_device=cuda resamples with PIL's filters; the model's 'nearest' "
                             "interpolation is not one: use data.decode_device=cpu")  # fmt: skip
        self.transform = transform
        self.pixels = pixels
        self.device = torch.device(device)
        self.mean = torch.tensor(transform.mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(transform.std, dtype=torch.float32, device=self.device).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"DeviceStage({self.pixels}, {self.device}, {self.transform!r})"

    @classmethod
    def for_dataset(cls, dataset: Any, device: torch.device | str) -> DeviceStage | None:
        """The stage a training dataset's items need (None for normalised float items)."""
        pixels = getattr(dataset, "pixels", "float")
        return None if pixels == "float" else cls(dataset.transform, pixels, device)

    # ------------------------------------------------------------------------------------------- host and device
    def host_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        """What the stage needs from the CPU before the copy: the real frames' flat positions (no device sync),
        the first ``sum(frame_counts)`` of the collated ``frame_index`` (which `train.frame_buckets` may pad)."""
        if self.pixels == "jpeg":
            batch["frames_real_index"] = batch["frame_index"][: sum(batch["frame_counts"])]
        return batch

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with ``frames`` (B, T, 3, S, S) and ``image`` (B, 3, S, S) as normalised float32 on the device.

        Expects ``frame_mask`` (and, for uint8 items, ``frames`` and ``image``) already on the device."""
        mask = batch["frame_mask"]
        if self.pixels == "jpeg":
            batch["frames"] = self.decode_frames(batch["frames_jpeg"], batch["frames_params"],
                                                 batch["frames_real_index"], tuple(mask.shape))  # fmt: skip
            shop = [data for item in batch["image_jpeg"] for data in item]  # one file per item
            batch["image"] = self.augment(self.decode(shop), batch["image_params"].cpu())
        batch["frames"] = self.normalize(batch["frames"], mask)
        batch["image"] = self.normalize(batch["image"])
        return batch

    def normalize(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (..., 3, S, S) -> float32 normalised; with ``mask`` (the leading dims), masked-out frames are 0."""
        x = pixels.to(self.device, non_blocking=True).float().div_(255.0).sub_(self.mean).mul_(self.inv_std)
        if mask is None:
            return x
        keep = mask.to(self.device, non_blocking=True).reshape(*mask.shape, 1, 1, 1)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))

    # ------------------------------------------------------------------------------------------------ JPEG path
    def decode_frames(
        self, encoded: list[list[torch.Tensor]], params: torch.Tensor, real_index: torch.Tensor,
        shape: tuple[int, int],
    ) -> torch.Tensor:
        """JPEG bytes of each clip's real frames -> uint8 (B, T, 3, S, S), zeros where no frame is."""
        size = self.transform.image_size
        flat = [data for clip in encoded for data in clip]
        out = torch.zeros(shape[0] * shape[1], 3, size, size, dtype=torch.uint8, device=self.device)
        if not flat:
            return out.view(*shape, 3, size, size)
        rows = params.reshape(-1, PARAM_FIELDS).cpu()[real_index.cpu()]  # (V, 7), in the order of ``flat``
        crops = self.augment(self.decode(flat), rows)
        out.index_copy_(0, real_index.to(self.device, non_blocking=True), crops)
        return out.view(*shape, 3, size, size)

    def decode(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        """Image files' bytes -> RGB uint8 (3, H, W) on the device: the JPEGs in one batched call on the device,
        anything else (a PNG shop image) on the CPU, then copied."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg  # only this path needs them

        is_jpeg = [len(data) > 1 and int(data[0]) == 0xFF and int(data[1]) == 0xD8 for data in encoded]
        jpegs = [data for data, j in zip(encoded, is_jpeg, strict=True) if j]
        with warnings.catch_warnings():
            # torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; they are what is installed
            # and tested here. Moving to TorchCodec's batched decoder is a follow-up, not a per-batch warning.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device) if jpegs else [])
            return [next(decoded) if j else decode_image(data, mode=ImageReadMode.RGB).to(self.device)
                    for data, j in zip(encoded, is_jpeg, strict=True)]  # fmt: skip

    def augment(self, images: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 (3, H, W) images and their `params_row` rows -> uint8 (n, 3, S, S) as `to_array` makes
        them (resize, crop, jitter, flip), grouped by source size so each group is a few batched products."""
        size, resize = self.transform.image_size, self.transform.resize_size
        out = torch.empty(len(images), 3, size, size, dtype=torch.uint8, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[1]), int(image.shape[2])), []).append(i)
        for (height, width), members in groups.items():
            for start in range(0, len(members), RESAMPLE_CHUNK):
                chunk = members[start : start + RESAMPLE_CHUNK]
                stack = torch.stack([images[i] for i in chunk])
                out[torch.tensor(chunk, device=self.device)] = self._resample(stack, rows[chunk], height, width,
                                                                              resize, size)  # fmt: skip
        factors = rows[:, 4:7].to(torch.float32)
        if (factors != 1.0).any():  # drawn on the host: no device sync; a shop image may come without jitter
            jittered = jitter(out, factors.to(self.device))
            out = torch.where((factors != 1.0).any(dim=1).to(self.device).view(-1, 1, 1, 1), jittered, out)
        return out

    def _resample(self, stack: torch.Tensor, rows: torch.Tensor, height: int, width: int, resize: int, size: int,
                  ) -> torch.Tensor:  # fmt: skip
        """One source size: each frame's (S, H) and (S, W) weights from its draw, then PIL's two passes."""
        f64 = torch.float64
        top, left, side, flip = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] > 0.5
        steps = torch.arange(size, dtype=f64)[None]
        boxed = side != size  # a scale crop: the box in resized coordinates, mapped onto the source, resampled once
        sx, sy = width / resize, height / resize
        zero = torch.zeros_like(top)
        in0y = torch.where(boxed, top * sy, zero)
        in1y = torch.where(boxed, (top + side) * sy, torch.full_like(top, float(height)))
        in0x = torch.where(boxed, left * sx, zero)
        in1x = torch.where(boxed, (left + side) * sx, torch.full_like(top, float(width)))
        out_size = torch.where(boxed, torch.full_like(top, float(size)), torch.full_like(top, float(resize)))
        row_index = torch.where(boxed[:, None], steps, top[:, None] + steps)
        col_index = torch.where(boxed[:, None], steps, left[:, None] + steps)
        col_index = torch.where(flip[:, None], col_index.flip(1), col_index).long()
        # Which pass runs first (device_resample's module doc), from the draws on the host; weights built on the device.
        row_shrink, col_shrink = (in1y - in0y) / out_size, (in1x - in0x) / out_size
        first = (row_shrink > 1.0) & (row_shrink > col_shrink)
        name, dev = self.transform.interpolation, self.device
        result = torch.empty(len(rows), 3, size, size, dtype=torch.uint8, device=dev)
        for order in (False, True):
            pick = (first == order).nonzero().squeeze(1)
            if not pick.numel():
                continue
            row_w = resample_weights(name, height, in0y[pick].to(dev), in1y[pick].to(dev), out_size[pick].to(dev),
                                     row_index[pick].long().to(dev))  # fmt: skip
            col_w = resample_weights(name, width, in0x[pick].to(dev), in1x[pick].to(dev), out_size[pick].to(dev),
                                     col_index[pick].to(dev))  # fmt: skip
            dev_pick = pick.to(dev)
            result[dev_pick] = resample(stack[dev_pick], row_w, col_w, rows_before_cols=order)
        return result


def jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """`rice.data.transforms._jitter` on a batch: uint8 (n, 3, S, S), factors (n, 3) brightness/contrast/saturation.

    The same float32 operations in the same order; the image mean is summed in another order than numpy's, so a
    pixel may land one unit off where the sum rounds differently (measured: tests/data/test_gpu_decode_path.py)."""
    brightness, contrast, saturation = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = images.float() * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = torch.tensor(_GREY, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    luma = (x * grey).sum(dim=1, keepdim=True)
    x = luma + (x - luma) * saturation
    return (x + 0.5).clamp_(0.0, 255.0).to(torch.uint8)
