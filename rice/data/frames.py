"""Still images (shop images, prepared JPEG/PNG frames) read with PIL."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .video import MediaError

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_HINT = "re-download it or run `rice prepare` to list bad files"


def load_image(path: str | os.PathLike[str], target_short_side: int | None = None) -> Image.Image:
    """Open an image as RGB.

    Args:
        path: a JPEG/PNG (anything PIL reads).
        target_short_side: the size the caller will resize to. For a JPEG much larger than that, PIL's draft mode
            decodes at a reduced DCT scale (1/2, 1/4, 1/8) that still keeps both sides >= this value, which is
            several times faster than a full decode. ``None`` decodes at full size.

    Raises:
        MediaError: missing, empty or corrupt file (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image file not found; {_HINT}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: cannot decode image (empty file, 0 bytes); {_HINT}")
    try:
        with warnings.catch_warnings():
            # A header declaring more pixels than PIL's limit is a decompression bomb: refuse it instead of
            # allocating gigabytes (PIL only warns between 1x and 2x the limit, and raises above).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if target_short_side is not None and img.format == "JPEG":
                    img.draft("RGB", (target_short_side, target_short_side))
                return img.convert("RGB")  # convert() forces the full decode while the file is open
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is a bad sample, not a crash
        kind = "decompression bomb" if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)) \
            else "corrupt file"
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise MediaError(f"{path}: cannot decode image ({kind}: {detail}); {_HINT}") from None


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a prepared-frames folder in chronological (= sorted name) order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_frames(paths: Sequence[str | os.PathLike[str]], target_short_side: int | None = None) -> list[Image.Image]:
    """Load several frame files (see `load_image`)."""
    return [load_image(p, target_short_side) for p in paths]
