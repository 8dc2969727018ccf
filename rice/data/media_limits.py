"""Bounds on what decoding one image or video may cost, checked from headers before any pixel is decoded.

A 198 KB 8192x8192 MP4 cost 1.9 GB to decode, a 1.4 KB MP4 whose sample table claims 50 million frames made
ffmpeg reserve an index of gigabytes while opening it, and a 258 KB single-colour 9000x9000 PNG 650 MB. Every
reader in `rice.data` (hence `rice search`, `rice embed`, the service's uploads and the datasets) goes through
these checks:

- `MAX_PIXELS` per decoded frame or image (a JPEG is first reduced by PIL's draft mode when that brings it
  under the bound);
- `MAX_VIDEO_FRAMES` declared in a video's header, and no more frames than the file has bytes (an MP4 sample
  needs at least one byte), read from the MP4 boxes with plain Python before ffmpeg sees the file;
- `MAX_DECODED_BYTES` of RGB frames per read (frames asked for x width x height x 3): a request's budget;
- `DECODE_SLOTS`: at most that many decodes run at once in a process, whatever the number of threads asking.

Over a bound: `MediaTooLarge`, a `MediaError` (one line naming the file, the size and the bound).
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

MAX_PIXELS = 4096 * 4096  # per frame or image: 4K video (3840x2160) and 16-MP photos pass
MAX_VIDEO_FRAMES = 1 << 22  # declared in a header: 4.2 M frames, 39 hours at 30 fps
MAX_DECODED_BYTES = 768 * 2**20  # RGB frames of one read: 10 frames at the pixel bound, 120 frames of 1080p
MAX_CONCURRENT_DECODES = 4  # a fixed small number: memory is the bound, not the CPUs
DECODE_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


class MediaError(ValueError):
    """A video or image that cannot be read; the message is one line naming the file and a fix."""


class MediaTooLarge(MediaError):
    """A video or image over a decoding bound (pixels per frame, frames, bytes of one read)."""


def check_pixels(
    path: str | os.PathLike[str], width: int, height: int, what: str, max_pixels: int = MAX_PIXELS
) -> None:
    """Refuse a ``width`` x ``height`` frame or image over ``max_pixels`` (before it is decoded)."""
    if width * height > max_pixels:
        raise MediaTooLarge(
            f"{path}: {what} of {width}x{height} pixels ({width * height / 1e6:.1f} MP) is over the limit of "
            f"{max_pixels / 1e6:.1f} MP per frame; scale it down (e.g. to 1920x1080) and try again"
        )


def check_decoded_bytes(
    path: str | os.PathLike[str], frames: int, width: int, height: int, max_bytes: int = MAX_DECODED_BYTES
) -> None:
    """Refuse a read whose RGB frames would take more than ``max_bytes``, before decoding any of them."""
    need = frames * width * height * 3
    if need > max_bytes:
        raise MediaTooLarge(
            f"{path}: {frames} frames of {width}x{height} would take {need / 2**20:.0f} MiB decoded, over the "
            f"budget of {max_bytes / 2**20:.0f} MiB per read; send a shorter or smaller video"
        )


def check_frame_count(
    path: str | os.PathLike[str], declared: int, file_size: int, max_frames: int = MAX_VIDEO_FRAMES
) -> None:
    """Refuse a header that declares more frames than the bound, or more than the file has bytes."""
    if declared > max_frames or declared > file_size:
        raise MediaTooLarge(
            f"{path}: the header declares {declared} frames in a file of {file_size} bytes (at most "
            f"{min(max_frames, file_size)} possible); the file is damaged or forged, re-encode it"
        )


# ------------------------------------------------------------------------------------------- MP4 / MOV headers
# ffmpeg's MP4 demuxer reserves its frame index from the sample table's declared count while *opening* a file, so
# the count must be checked before ffmpeg (PyAV or decord) is handed the file. The boxes are ISO/IEC 14496-12.
_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}
_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pnot", b"meta", b"moof", b"mfra",
              b"styp", b"sidx", b"pdin"}  # fmt: skip
_VISUAL_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4v", b"vp09", b"av01", b"jpeg", b"mjpa", b"mjpb",
                   b"s263", b"h263", b"apcn", b"apch", b"apcs", b"apco", b"ap4h"}  # fmt: skip
MAX_MOOV_BYTES = 256 * 2**20  # a sample table of MAX_VIDEO_FRAMES entries takes tens of MB


def _boxes(data: bytes, start: int, end: int):  # noqa: ANN202 - yields (type, payload start, box end)
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return  # a damaged box: ffmpeg reports it in its own words
        yield kind, pos + header, pos + size
        pos += size


def _walk(data: bytes, start: int, end: int, found: dict[str, list[int]]) -> None:
    for kind, body, box_end in _boxes(data, start, end):
        if kind in _CONTAINER_BOXES:
            _walk(data, body, box_end, found)
        elif kind in (b"stsz", b"stz2") and body + 12 <= box_end:
            found["samples"].append(struct.unpack_from(">I", data, body + 8)[0])
        elif kind == b"stts" and body + 8 <= box_end:
            entries = struct.unpack_from(">I", data, body + 4)[0]
            counts = [struct.unpack_from(">I", data, body + 8 + 8 * i)[0]
                      for i in range(min(entries, (box_end - body - 8) // 8))]  # fmt: skip
            found["samples"].append(sum(counts))
        elif kind == b"stsd" and body + 8 <= box_end:
            for entry, entry_body, entry_end in _boxes(data, body + 8, box_end):
                # VisualSampleEntry: 6 reserved + 2 index + 16 pre-defined/reserved, then width, height (16 bits)
                if entry in _VISUAL_ENTRIES and entry_body + 28 <= entry_end:
                    found["sizes"].append(list(struct.unpack_from(">HH", data, entry_body + 24)))


def check_mp4_header(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS,
                     max_frames: int = MAX_VIDEO_FRAMES) -> tuple[int, int] | None:  # fmt: skip
    """Check an MP4/MOV file's declared frame counts and frame sizes before a decoder opens it.

    Returns:
        (width, height) of the first video track's sample entry; ``None`` when the file is not an MP4/MOV or
        its header holds no video sample entry.

    Files that are not ISO base media files (Matroska, WebM, AVI) pass unchanged: their decoders are checked
    after opening (`rice.data.video`). Reads the top-level box headers and the ``moov`` box only.

    Raises:
        MediaTooLarge: a track declares more frames than ``max_frames`` or than the file has bytes, or a video
            sample entry's width x height is over ``max_pixels``.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
        if len(head) < 8 or head[4:8] not in _TOP_LEVEL:
            return None
        pos, moov = 0, None
        while pos + 8 <= size:
            handle.seek(pos)
            header = handle.read(16)
            if len(header) < 8:
                break
            box_size, kind = struct.unpack_from(">I4s", header)
            header_size = 8
            if box_size == 1 and len(header) >= 16:
                box_size, header_size = struct.unpack_from(">Q", header, 8)[0], 16
            elif box_size == 0:
                box_size = size - pos
            if box_size < header_size:
                break
            if kind == b"moov":
                if box_size > MAX_MOOV_BYTES:
                    raise MediaTooLarge(f"{path}: a header (moov box) of {box_size / 2**20:.0f} MiB is over the "
                                        f"limit of {MAX_MOOV_BYTES / 2**20:.0f} MiB; re-encode the video")
                handle.seek(pos + header_size)
                moov = handle.read(box_size - header_size)
                break
            pos += box_size
    if moov is None:
        return None  # no header found: ffmpeg will say what is wrong
    found: dict[str, list[int]] = {"samples": [], "sizes": []}
    _walk(moov, 0, len(moov), found)
    for declared in found["samples"]:
        check_frame_count(path, declared, size, max_frames)
    for width, height in found["sizes"]:
        check_pixels(path, width, height, "a frame", max_pixels)
    return tuple(found["sizes"][0]) if found["sizes"] else None  # type: ignore[return-value]
