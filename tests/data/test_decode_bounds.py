"""Decoding is bounded before a pixel is decoded: frame size, declared frame count, the bytes of one read and the
decodes running at once (rice.data.media_limits), on the hostile corpus (tests/hostile_media.py) with both video
backends. Memory is measured as the peak RSS of a fresh subprocess, never by timing."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

import rice.data.media_limits as limits
import rice.data.video as video
from rice.data.frames import load_image
from rice.data.media_limits import MediaError, MediaTooLarge
from rice.data.video import check_video_header, read_video_frames, video_info
from tests.hostile_media import big_png, huge_frame_mp4, many_frames_mp4, peak_rss_mb

BACKENDS = ["decord", "pyav"]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile_media")
    return {
        "huge_frames": huge_frame_mp4(folder / "huge_frames.mp4"),
        "many_frames": many_frames_mp4(folder / "many_frames.mp4"),
        "big_png": big_png(folder / "big.png"),
    }


def _backend(name: str) -> str:
    if name == "decord":
        pytest.importorskip("decord")
    return name


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_8192_pixel_video_is_refused_from_its_header(corpus, backend):
    path = corpus["huge_frames"]
    assert path.stat().st_size < 600_000  # small on disk, 400 MB of RGB for its two frames
    with pytest.raises(MediaTooLarge, match=r"huge_frames.mp4: a frame of 8192x8192 pixels .* over the limit") as err:
        read_video_frames(path, [0, 1], backend=_backend(backend))
    assert "\n" not in str(err.value)
    with pytest.raises(MediaTooLarge):
        video_info(path, backend)
    with pytest.raises(MediaTooLarge):
        check_video_header(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_header_claiming_fifty_million_frames_is_refused_before_ffmpeg_opens_it(corpus, backend):
    path = corpus["many_frames"]
    with pytest.raises(MediaTooLarge, match="declares 50000000 frames in a file of"):
        read_video_frames(path, lambda n: [0, n - 1], backend=_backend(backend))
    with pytest.raises(MediaTooLarge, match="declares 50000000 frames"):
        video_info(path, backend)


def test_a_9000_pixel_png_is_refused_from_its_header(corpus):
    with pytest.raises(MediaTooLarge, match=r"big.png: cannot decode image \(decompression bomb: 9000x9000 pixels"):
        load_image(corpus["big_png"])
    assert isinstance(MediaTooLarge("x"), MediaError)  # every reader's callers already handle it


@linux_only
@pytest.mark.parametrize(("name", "read"), [
    ("huge_frames", "read_video_frames(PATH, [0, 1], backend='pyav')"),
    ("huge_frames", "read_video_frames(PATH, [0, 1], backend='auto')"),
    ("many_frames", "read_video_frames(PATH, lambda n: [0, n // 2, n - 1], backend='pyav')"),
    ("many_frames", "read_video_frames(PATH, lambda n: [0, n // 2, n - 1], backend='auto')"),
    ("big_png", "load_image(PATH)"),
])  # fmt: skip
def test_refusing_costs_no_memory(corpus, name, read):
    """Before the bounds: 1.1-1.6 GB (8192x8192), 2.3-3.5 GB (50 M frames), 650 MB (the PNG)."""
    code = (f"from rice.data.frames import load_image\nfrom rice.data.video import read_video_frames\n"
            f"PATH = {str(corpus[name])!r}\n"
            f"try:\n    {read}\nexcept Exception as err:\n    result['error'] = type(err).__name__\n")  # fmt: skip
    added, result = peak_rss_mb(code)
    assert result.get("error") == "MediaTooLarge", result
    assert added < 100, f"refusing {name} added {added:.0f} MiB"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_bytes_of_one_read_are_budgeted_before_decoding(tiny_video, backend):
    path, _ = tiny_video  # 12 frames of 64x40: 7680 bytes each in RGB
    assert read_video_frames(path, [0, 1], backend=_backend(backend), max_bytes=2 * 7680).shape == (2, 40, 64, 3)
    with pytest.raises(MediaTooLarge, match=r"3 frames of 64x40 would take .* over the budget"):
        read_video_frames(path, [0, 1, 2], backend=backend, max_bytes=2 * 7680)
    with pytest.raises(MediaTooLarge, match="12 frames of 64x40"):
        read_video_frames(path, None, backend=backend, max_bytes=2 * 7680)  # None = every frame: counted too
    with pytest.raises(MediaTooLarge, match="a frame of 64x40 pixels"):
        read_video_frames(path, [0], backend=backend, max_pixels=64 * 40 - 1)


def test_a_large_jpeg_is_decoded_reduced_under_the_bound(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (800, 600), (10, 120, 200)).save(path, quality=90)
    assert load_image(path).size == (800, 600)
    assert load_image(path, max_pixels=200 * 150).size == (200, 150)  # draft at 1/4: under the bound
    assert load_image(path, target_short_side=100, max_pixels=200 * 150).size == (200, 150)
    assert load_image(path, target_short_side=300, max_pixels=10**6).size == (400, 300)  # the target's scale
    with pytest.raises(MediaTooLarge, match="800x600|100x75"):
        load_image(path, max_pixels=50 * 30)  # even 1/8 (100x75) is over
    png = tmp_path / "plain.png"
    Image.new("RGB", (80, 60)).save(png)
    with pytest.raises(MediaTooLarge, match="80x60 pixels"):
        load_image(png, max_pixels=80 * 60 - 1)


class _CountingSlots:
    """A bounded semaphore that records how many holders it had at once and how often it was taken."""

    def __init__(self, slots: int) -> None:
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.holders = self.most = self.taken = 0

    def __enter__(self) -> None:
        self._semaphore.acquire()
        with self._lock:
            self.holders += 1
            self.taken += 1
            self.most = max(self.most, self.holders)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.holders -= 1
        self._semaphore.release()


def test_decodes_from_many_threads_share_a_few_slots(tiny_video, tmp_path, monkeypatch):
    import rice.data.frames as frames

    slots = _CountingSlots(2)
    for module in (limits, video, frames):
        monkeypatch.setattr(module, "DECODE_SLOTS", slots)
    path, _ = tiny_video
    image = tmp_path / "shop.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(image)
    start = threading.Barrier(12)
    errors: list[BaseException] = []

    def decode(i: int) -> None:
        start.wait()
        try:
            read_video_frames(path, [i % 12]) if i % 2 else load_image(image)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and slots.taken == 12 and 1 <= slots.most <= 2
