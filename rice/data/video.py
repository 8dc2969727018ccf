"""Reading frames out of mp4 files: decord when it is installed, PyAV (always a dependency) otherwise.

Both backends wrap ffmpeg's decoder, so they return the same frames for the same indices (tests/data/test_video.py
measures it). Only the frames asked for are converted to RGB: decord seeks with ``get_batch``; PyAV decodes
sequentially and stops after the last wanted frame.
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

VideoBackend = Literal["auto", "decord", "pyav"]
# Frame indices, or a function from the frame count to indices (lets a caller sample without a second open).
Indices = Sequence[int] | Callable[[int], Sequence[int]] | None
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")

_BAD_FILE_HINT = "re-download it or run `rice prepare` to list bad files"


class MediaError(ValueError):
    """A video or image that cannot be read; the message is one line naming the file and a fix."""


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


def _check_indices(path: Path, indices: Indices, num_frames: int) -> list[int]:
    if indices is None:
        return list(range(num_frames))
    wanted = [int(i) for i in (indices(num_frames) if callable(indices) else indices)]
    bad = [i for i in wanted if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} out of range; the video has {num_frames} frames")
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


def _decord_info(path: Path) -> VideoInfo:
    reader = _decord_reader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError(f"{path}: cannot decode video (no frames); {_BAD_FILE_HINT}")
    height, width = _decord_call(path, lambda: reader[0].asnumpy()).shape[:2]
    return VideoInfo(num_frames=num_frames, fps=float(reader.get_avg_fps()), width=int(width), height=int(height))


def _decord_read(path: Path, indices: Indices) -> np.ndarray:
    reader = _decord_reader(path)
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError(f"{path}: cannot decode video (no frames); {_BAD_FILE_HINT}")
    wanted = _check_indices(path, indices, num_frames)
    if not wanted:
        height, width = _decord_call(path, lambda: reader[0].asnumpy()).shape[:2]
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    frames = _decord_call(path, lambda: reader.get_batch(wanted).asnumpy())
    return np.ascontiguousarray(frames, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------- PyAV
def _pyav_open(path: Path):  # noqa: ANN202
    import av

    try:
        container = av.open(str(path))
    except Exception as err:  # av.error.InvalidDataError and friends
        raise _corrupt(path, err) from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream in the file; {_BAD_FILE_HINT}")
    return container


def _pyav_count(container, path: Path) -> int:  # noqa: ANN001
    stream = container.streams.video[0]
    if stream.frames:  # from the mp4 sample table: free
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


def _pyav_read(path: Path, indices: Indices) -> np.ndarray:
    container = _pyav_open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        num_frames = _pyav_count(container, path)
        wanted = _check_indices(path, indices, num_frames)
        targets = set(wanted)
        last = max(wanted, default=-1)
        decoded: dict[int, np.ndarray] = {}
        previous: np.ndarray | None = None
        position = -1
        if last >= 0:
            for position, frame in enumerate(container.decode(stream)):
                if position in targets:
                    decoded[position] = frame.to_ndarray(format="rgb24")
                    previous = decoded[position]
                if position >= last:
                    break
        if last >= 0 and not decoded:
            raise MediaError(f"{path}: cannot decode video (no decodable frames); {_BAD_FILE_HINT}")
        # The header count can exceed the decodable frames by one or two (truncated tail): such indices get the
        # last decoded frame rather than failing the whole clip.
        if position < last:
            assert previous is not None, "a decoded frame must exist here"
            for index in targets - decoded.keys():
                decoded[index] = previous
    except (MediaError, IndexError):
        raise
    except Exception as err:
        raise _corrupt(path, err) from None
    finally:
        container.close()
    if not wanted:
        codec = stream.codec_context
        return np.zeros((0, codec.height, codec.width, 3), dtype=np.uint8)
    return np.stack([decoded[i] for i in wanted])


# ------------------------------------------------------------------------------------------------------ public API
def video_info(path: str | os.PathLike[str], backend: VideoBackend | str = "auto") -> VideoInfo:
    """Frame count, fps and size of a video, without decoding more than one frame.

    Raises:
        MediaError: missing, empty or corrupt file.
    """
    path = Path(path)
    _check_file(path)
    if resolve_backend(backend) == "pyav":
        return _pyav_info(path)
    try:
        return _decord_info(path)
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
) -> np.ndarray:
    """Decode frames of a video as RGB.

    Args:
        path: an mp4 (or any container ffmpeg reads).
        indices: 0-based frame indices in any order, repeats allowed; ``None`` reads every frame; a callable gets
            the frame count and returns the indices (sampling without opening the file twice).
        backend: ``"auto"`` (decord if installed, else PyAV; PyAV also retries a file decord fails on),
            ``"decord"`` or ``"pyav"``.

    Returns:
        uint8 array (N, H, W, 3), frames in the order of ``indices``.

    Raises:
        MediaError: missing, empty or corrupt file.
        IndexError: an index outside ``[0, num_frames)``.
    """
    path = Path(path)
    _check_file(path)
    if resolve_backend(backend) == "pyav":
        return _pyav_read(path, indices)
    try:
        return _decord_read(path, indices)
    except MediaError:
        if backend != "auto":
            raise
        # decord fails on some files PyAV reads (e.g. a 48x32 H.264 stream trips its buffer-size check); "auto"
        # retries with PyAV before declaring the file bad.
        return _pyav_read(path, indices)
