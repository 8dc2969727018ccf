"""Still images (shop images, prepared JPEG/PNG frames) read with PIL."""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .media_limits import DECODE_SLOTS, MAX_PIXELS, MediaError, MediaTooLarge

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_HINT = "re-download it or run `rice prepare` to list bad files"


def load_image(
    path: str | os.PathLike[str], target_short_side: int | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open an image as RGB.

    Args:
        path: a JPEG/PNG (anything PIL reads).
        target_short_side: the size the caller will resize to. For a JPEG much larger than that, PIL's draft mode
            decodes at a reduced DCT scale (1/2, 1/4, 1/8) that still keeps both sides >= this value, which is
            several times faster than a full decode. ``None`` decodes at full size.
        max_pixels: refuse an image larger than this, from its header, before decoding it; a JPEG is first
            reduced by draft mode (down to 1/8) when that brings it under the bound.

    Raises:
        MediaError: missing, empty or corrupt file (one line naming the file); MediaTooLarge: over the bound.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image file not found; {_HINT}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: cannot decode image (empty file, 0 bytes); {_HINT}")
    try:
        # At most DECODE_SLOTS decodes at once in this process (see rice.data.media_limits).
        with DECODE_SLOTS, warnings.catch_warnings():
            # A header declaring more pixels than PIL's limit is a decompression bomb: refuse it instead of
            # allocating gigabytes (PIL only warns between 1x and 2x the limit, and raises above).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":
                    _draft(img, target_short_side, max_pixels)
                # Opening read the header only: the size is known and nothing is decoded yet.
                if img.width * img.height > max_pixels:
                    raise MediaTooLarge(
                        f"{path}: cannot decode image (decompression bomb: {img.width}x{img.height} pixels, "
                        f"{img.width * img.height / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:.1f} MP); "
                        "scale it down and try again"
                    )
                return img.convert("RGB")  # convert() forces the full decode while the file is open
    except MediaTooLarge:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is a bad sample, not a crash
        bomb = isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning))
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        kind = "decompression bomb" if bomb else "corrupt file"
        raise (MediaTooLarge if bomb else MediaError)(f"{path}: cannot decode image ({kind}: {detail}); {_HINT}") \
            from None


def _draft(img: Image.Image, target_short_side: int | None, max_pixels: int) -> None:
    """Ask a JPEG for the reduced DCT scale (1, 1/2, 1/4, 1/8) that keeps both sides >= ``target_short_side`` and
    brings it under ``max_pixels``: the larger of the two reductions (PIL honours only the first draft call)."""
    width, height = img.size
    scale = 1
    if target_short_side is not None:
        fits = min(width // max(1, target_short_side), height // max(1, target_short_side))
        scale = max((s for s in (1, 2, 4, 8) if s <= fits), default=1)
    for bound_scale in (1, 2, 4, 8):
        if math.ceil(width / bound_scale) * math.ceil(height / bound_scale) <= max_pixels:
            break
    scale = max(scale, bound_scale)
    if target_short_side is not None or scale > 1:
        img.draft("RGB", (max(1, width // scale), max(1, height // scale)))


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a prepared-frames folder in chronological (= sorted name) order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_frames(paths: Sequence[str | os.PathLike[str]], target_short_side: int | None = None) -> list[Image.Image]:
    """Load several frame files (see `load_image`)."""
    return [load_image(p, target_short_side) for p in paths]


class DecodedImageCache:
    """Decoded images kept in memory up to a byte budget, the least recently used dropped first.

    A small dataset read for many epochs decodes the same JPEGs again and again: on the hard demo (192 clips,
    about 100 epochs, data loaded in the training process) decoding and listing frame folders took a third of
    every step. Each DataLoader worker process holds its own cache, so the budget is per process, and the
    training loader's workers restart every epoch (to see the new epoch), so their caches last one epoch: the cache
    pays off across epochs when the data is loaded in the training process (``data.workers 0``). Failures are not
    cached: a bad file raises `MediaError` on every read, and is skipped and counted each time.

    Args:
        max_mb: the budget in MiB of decoded RGB pixels; 0 turns the cache off (every read decodes).
    """

    def __init__(self, max_mb: float = 0.0) -> None:
        if max_mb < 0:
            raise ValueError(f"max_mb={max_mb} must be >= 0 (0 turns the cache off)")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.hits = self.misses = 0
        self._images: OrderedDict[tuple[str, int | None], Image.Image] = OrderedDict()
        self._folders: dict[str, list[Path]] = {}

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return (f"DecodedImageCache({len(self)} images, {self.bytes / 2**20:.1f}/{self.max_bytes / 2**20:.0f} MiB, "
                f"{self.hits} hits, {self.misses} misses)")  # fmt: skip

    def load_image(self, path: str | os.PathLike[str], target_short_side: int | None = None) -> Image.Image:
        """`load_image`, from memory when this file was decoded (at this draft size) before.

        The image returned may be shared with later calls: treat it as read-only (PIL's resize, crop and
        ``np.asarray`` all return new data)."""
        if not self.max_bytes:
            return load_image(path, target_short_side)
        key = (os.fspath(path), target_short_side)
        image = self._images.get(key)
        if image is not None:
            self.hits += 1
            self._images.move_to_end(key)
            return image
        self.misses += 1
        image = load_image(path, target_short_side)
        size = image.width * image.height * len(image.getbands())
        if size <= self.max_bytes:
            while self.bytes + size > self.max_bytes:
                _, dropped = self._images.popitem(last=False)
                self.bytes -= dropped.width * dropped.height * len(dropped.getbands())
            self._images[key] = image
            self.bytes += size
        return image

    def load_frames(
        self, paths: Sequence[str | os.PathLike[str]], target_short_side: int | None = None
    ) -> list[Image.Image]:
        return [self.load_image(p, target_short_side) for p in paths]

    def list_frame_files(self, folder: str | os.PathLike[str]) -> list[Path]:
        """`list_frame_files`, listed once per folder while the cache is on (a prepared folder does not change)."""
        if not self.max_bytes:
            return list_frame_files(folder)
        key = os.fspath(folder)
        if key not in self._folders:
            self._folders[key] = list_frame_files(folder)
        return self._folders[key]
