"""Reading frames out of mp4 files: decord when it is installed, PyAV (always a dependency) otherwise.

Both backends wrap ffmpeg's decoder, so they return the same frames for the same indices (tests/data/test_video.py
measures it). Only the frames asked for are converted to RGB: decord seeks with ``get_batch``; PyAV decodes
sequentially and stops after the last wanted frame (or at the end of the data, whatever the header's frame count).

Every read is bounded before a pixel is decoded (`rice.data.media_limits`): the frame size and frame count the
header declares, the RGB bytes of the frames asked for, and the number of decodes running at once.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

from .media_limits import (
    DECODE_SLOTS,
    MAX_DECODED_BYTES,
    MAX_PIXELS,
    MediaError,
    MediaTooLarge,
    check_decoded_bytes,
    check_mp4_header,
    check_pixels,
)

__all__ = ["MediaError", "MediaTooLarge", "VideoInfo", "check_video_header", "read_video_frames", "video_info",
           "video_num_frames"]  # fmt: skip

VideoBackend = Literal["auto", "decord", "pyav"]
# Frame indices, or a function from the frame count to indices (lets a caller sample without a second open).
Indices = Sequence[int] | Callable[[int], Sequence[int]] | None
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")

_BAD_FILE_HINT = "re-download it or run `rice prepare` to list bad files"


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of one video."""

    num_frames: int
    fps: float
    width: int
    height: int


def decord_available() -> bool:
    return importlib.util.find_spec("decord") is not None


def resolve_backend(backend: str = "auto") -> str:
    """``"auto"`` -> ``"decord"`` if importable, else ``"pyav"``; a named backend is checked and returned."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "decord" if decord_available() else "pyav"
    if backend == "decord" and not decord_available():
        raise ValueError("video backend 'decord' is not installed; `pip install decord` or use backend='pyav'")
    return backend


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{path}: video file not found; {_BAD_FILE_HINT}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: cannot decode video (empty file, 0 bytes); {_BAD_FILE_HINT}")


def _corrupt(path: Path, err: BaseException) -> MediaError:
    detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
    return MediaError(f"{path}: cannot decode video (empty or corrupt file: {detail}); {_BAD_FILE_HINT}")


def _check_indices(
    path: Path, indices: Indices, num_frames: int, size: tuple[int, int], max_bytes: int = MAX_DECODED_BYTES
) -> list[int]:
    """The frame indices to decode, after checking their RGB bytes against the read's budget."""
    if indices is None:
        check_decoded_bytes(path, num_frames, *size, max_bytes)
        return list(range(num_frames))
    wanted = [int(i) for i in (indices(num_frames) if callable(indices) else indices)]
    bad = [i for i in wanted if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} out of range; the video has {num_frames} frames")
    check_decoded_bytes(path, len(wanted), *size, max_bytes)
    return wanted


# ---------------------------------------------------------------------------------------------------------- decord
# decord's C++ code and the ffmpeg inside it print their errors straight to file descriptor 2 ("ERROR opening ...",
# "moov atom not found"), once per read of a bad file, which floods a training log every epoch. While decord runs,
# fd 2 goes to a temporary file instead; what it said becomes part of our one-line MediaError, which the datasets
# put in the end-of-epoch report. The redirect is process-wide, so concurrent readers in threads share one.
_stderr_lock = threading.Lock()
_stderr_users = 0
_stderr_saved: int | None = None
_stderr_sink: IO[bytes] | None = None


@contextmanager
def _decord_stderr_captured() -> Iterator[list[str]]:
    """Redirect fd 2 while decord runs; yields a list that receives the lines it printed (filled on exit)."""
    global _stderr_users, _stderr_saved, _stderr_sink
    lines: list[str] = []
    with _stderr_lock:
        if _stderr_users == 0:
            try:
                sys.stderr.flush()
                sink = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(sink.fileno(), 2)
                _stderr_saved, _stderr_sink = saved, sink
            except (OSError, ValueError, AttributeError):  # no fd 2 (a daemon): nothing to hide
                _stderr_saved, _stderr_sink = None, None
        _stderr_users += 1
        start = _stderr_sink.tell() if _stderr_sink is not None else 0
    try:
        yield lines
    finally:
        with _stderr_lock:
            _stderr_users -= 1
            if _stderr_sink is not None:
                _stderr_sink.seek(start)
                said = _stderr_sink.read().decode("utf-8", "replace")
                _stderr_sink.seek(0, os.SEEK_END)
                lines.extend(line.strip() for line in said.splitlines() if line.strip())
                if _stderr_users == 0:
                    os.dup2(_stderr_saved, 2)  # type: ignore[arg-type]
                    os.close(_stderr_saved)  # type: ignore[arg-type]
                    _stderr_sink.close()
                    _stderr_saved, _stderr_sink = None, None


def _decord_failed(path: Path, err: BaseException, printed: list[str]) -> MediaError:
    said = [line for line in printed if "ERROR" in line or "error" in line or "not found" in line] or printed
    if said:  # ffmpeg's own words ("moov atom not found") say more than decord's exception
        return _corrupt(path, RuntimeError(said[0].split("] ", 1)[-1]))
    return _corrupt(path, err)


def _decord_reader(path: Path):  # noqa: ANN202 - decord has no type stubs
    import decord

    with _decord_stderr_captured() as printed:
        try:
            # One decoding thread: DataLoader workers already run one reader each.
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        except Exception as err:  # decord raises DECORDError / RuntimeError for unreadable input
            failure = err
    raise _decord_failed(path, failure, printed) from None


def _decord_call(path: Path, fn: Callable[[], np.ndarray]) -> np.ndarray:
    with _decord_stderr_captured() as printed:
        try:
            return fn()
        except Exception as err:
            failure = err
    raise _decord_failed(path, failure, printed) from None


def _decord_info(path: Path, size: tuple[int, int]) -> VideoInfo:
    reader = _decord_reader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError(f"{path}: cannot decode video (no frames); {_BAD_FILE_HINT}")
    return VideoInfo(num_frames=num_frames, fps=float(reader.get_avg_fps()), width=size[0], height=size[1])


def _decord_read(path: Path, indices: Indices, size: tuple[int, int], max_bytes: int) -> np.ndarray:
    reader = _decord_reader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError(f"{path}: cannot decode video (no frames); {_BAD_FILE_HINT}")
    wanted = _check_indices(path, indices, num_frames, size, max_bytes)
    if not wanted:
        return np.zeros((0, size[1], size[0], 3), dtype=np.uint8)
    frames = _decord_call(path, lambda: reader.get_batch(wanted).asnumpy())
    return np.ascontiguousarray(frames, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------- PyAV
def _pyav_open(path: Path, max_pixels: int = MAX_PIXELS):  # noqa: ANN202
    """Open a container that has a video stream whose declared frame size is within ``max_pixels``."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:  # av.error.InvalidDataError and friends
        raise _corrupt(path, err) from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream in the file; {_BAD_FILE_HINT}")
    codec = container.streams.video[0].codec_context
    try:
        check_pixels(path, codec.width, codec.height, "a frame", max_pixels)
    except MediaTooLarge:
        container.close()
        raise
    return container


def _pyav_count(container, path: Path) -> int:  # noqa: ANN001
    stream = container.streams.video[0]
    if stream.frames:  # from the mp4 sample table: free (and bounded by check_mp4_header before the open)
        return int(stream.frames)
    # No count in the header (some containers): count the packets that carry a frame, without decoding.
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    if count == 0:
        raise MediaError(f"{path}: cannot decode video (no frames); {_BAD_FILE_HINT}")
    return count


def _pyav_info(path: Path) -> VideoInfo:
    container = _pyav_open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        num_frames = _pyav_count(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        return VideoInfo(num_frames=num_frames, fps=float(rate) if rate else 0.0, width=width, height=height)
    except MediaError:
        raise
    except Exception as err:
        raise _corrupt(path, err) from None
    finally:
        container.close()


def _pyav_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """The declared frame size of a container that is not an MP4 (whose boxes gave it without ffmpeg)."""
    container = _pyav_open(path, max_pixels)
    try:
        codec = container.streams.video[0].codec_context
        return int(codec.width), int(codec.height)
    finally:
        container.close()


def _pyav_read(path: Path, indices: Indices, size: tuple[int, int], max_pixels: int, max_bytes: int) -> np.ndarray:
    container = _pyav_open(path, max_pixels)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        num_frames = _pyav_count(container, path)
        wanted = _check_indices(path, indices, num_frames, size, max_bytes)
        rows: dict[int, list[int]] = {}  # frame index -> the output rows that show it (indices may repeat)
        for row, index in enumerate(wanted):
            rows.setdefault(index, []).append(row)
        last = max(wanted, default=-1)
        out: np.ndarray | None = None  # allocated once the first frame's real size is known; never stacked
        previous: np.ndarray | None = None
        filled: set[int] = set()
        position = -1
        if last >= 0:
            # Decoding stops at the last wanted frame or at the end of the data, whichever comes first: a header
            # that claims millions of frames costs only the frames the file really holds.
            for position, frame in enumerate(container.decode(stream)):
                if position in rows:
                    # The decoder's frames can be larger than the header said (a forged sample entry).
                    check_pixels(path, frame.width, frame.height, "a decoded frame", max_pixels)
                    if out is None:
                        check_decoded_bytes(path, len(wanted), frame.width, frame.height, max_bytes)
                        out = np.empty((len(wanted), frame.height, frame.width, 3), dtype=np.uint8)
                    if (frame.height, frame.width) != out.shape[1:3]:
                        raise MediaError(f"{path}: cannot decode video (the frame size changes mid-stream); "
                                         f"{_BAD_FILE_HINT}")  # fmt: skip
                    previous = frame.to_ndarray(format="rgb24")
                    out[rows[position]] = previous
                    filled.add(position)
                if position >= last:
                    break
        if last >= 0 and not filled:
            raise MediaError(f"{path}: cannot decode video (no decodable frames); {_BAD_FILE_HINT}")
        # The header count can exceed the decodable frames (a truncated tail, or a forged count): such indices get
        # the last decoded frame rather than failing the whole clip.
        if position < last:
            assert out is not None and previous is not None, "a decoded frame must exist here"
            for index in rows.keys() - filled:
                out[rows[index]] = previous
    except (MediaError, IndexError):
        raise
    except Exception as err:
        raise _corrupt(path, err) from None
    finally:
        container.close()
    if out is None:
        return np.zeros((0, size[1], size[0], 3), dtype=np.uint8)
    return out


# ------------------------------------------------------------------------------------------------------ public API
def check_video_header(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Check a video's declared frame size (and, for MP4/MOV, its declared frame counts) before decoding it.

    MP4/MOV headers are read with plain Python before ffmpeg opens the file (ffmpeg's demuxer reserves memory
    from the declared counts while opening); other containers are opened by PyAV without decoding a frame. Call
    it before handing a file to a decoder of your own (a streaming source).

    Returns:
        (width, height) the header declares.

    Raises:
        MediaError: missing, empty or corrupt file. MediaTooLarge: over a bound (see `rice.data.media_limits`).
    """
    path = Path(path)
    _check_file(path)
    return check_mp4_header(path, max_pixels) or _pyav_size(path, max_pixels)


def video_info(path: str | os.PathLike[str], backend: VideoBackend | str = "auto") -> VideoInfo:
    """Frame count, fps and size of a video, without decoding a frame.

    Raises:
        MediaError: missing, empty or corrupt file; MediaTooLarge: over a decoding bound.
    """
    path = Path(path)
    size = check_video_header(path)
    if resolve_backend(backend) == "pyav":
        return _pyav_info(path)
    try:
        return _decord_info(path, size)
    except MediaError:
        if backend != "auto":
            raise
        return _pyav_info(path)


def video_num_frames(path: str | os.PathLike[str], backend: VideoBackend | str = "auto") -> int:
    """Number of frames of a video (from the container header)."""
    return video_info(path, backend).num_frames


def read_video_frames(
    path: str | os.PathLike[str],
    indices: Indices = None,
    backend: VideoBackend | str = "auto",
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_DECODED_BYTES,
) -> np.ndarray:
    """Decode frames of a video as RGB.

    Args:
        path: an mp4 (or any container ffmpeg reads).
        indices: 0-based frame indices in any order, repeats allowed; ``None`` reads every frame; a callable gets
            the frame count and returns the indices (sampling without opening the file twice).
        backend: ``"auto"`` (decord if installed, else PyAV; PyAV also retries a file decord fails on),
            ``"decord"`` or ``"pyav"``.
        max_pixels: refuse frames larger than this (checked from the header, before decoding).
        max_bytes: refuse a read whose RGB frames (count x width x height x 3) would take more.

    Returns:
        uint8 array (N, H, W, 3), frames in the order of ``indices``.

    Raises:
        MediaError: missing, empty or corrupt file; MediaTooLarge (a MediaError): over a bound.
        IndexError: an index outside ``[0, num_frames)``.
    """
    path = Path(path)
    # At most DECODE_SLOTS decodes at once in this process: with the per-read budget, that bounds the memory
    # all threads (the service's requests, `rice search` workers) can spend on decoded frames.
    with DECODE_SLOTS:
        size = check_video_header(path, max_pixels)
        if resolve_backend(backend) == "pyav":
            return _pyav_read(path, indices, size, max_pixels, max_bytes)
        try:
            return _decord_read(path, indices, size, max_bytes)
        except MediaTooLarge:
            raise
        except MediaError:
            if backend != "auto":
                raise
            # decord fails on some files PyAV reads (e.g. a 48x32 H.264 stream trips its buffer-size check);
            # "auto" retries with PyAV before declaring the file bad.
            return _pyav_read(path, indices, size, max_pixels, max_bytes)
