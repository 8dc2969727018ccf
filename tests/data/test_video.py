"""Video and image readers on real generated media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rice.data.frames import list_frame_files, load_image
from rice.data.video import MediaError, read_video_frames, resolve_backend, video_info, video_num_frames

BACKENDS = ["decord", "pyav"]
NUM_VIDEO_FRAMES = 12  # conftest.tiny_video


def test_auto_backend_prefers_decord() -> None:
    assert resolve_backend("auto") in ("decord", "pyav")
    pytest.importorskip("decord")
    assert resolve_backend("auto") == "decord"
    with pytest.raises(ValueError, match="choose from"):
        resolve_backend("opencv")


@pytest.mark.parametrize("backend", BACKENDS)
def test_info(tiny_video: tuple[Path, np.ndarray], backend: str) -> None:
    path, _ = tiny_video
    info = video_info(path, backend)
    assert (info.num_frames, info.width, info.height) == (NUM_VIDEO_FRAMES, 64, 40)
    assert info.fps == pytest.approx(8.0)
    assert video_num_frames(path, backend) == NUM_VIDEO_FRAMES


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_match_source_and_indices_are_honoured(tiny_video: tuple[Path, np.ndarray], backend: str) -> None:
    path, source = tiny_video
    everything = read_video_frames(path, backend=backend)
    assert everything.shape == (NUM_VIDEO_FRAMES, 40, 64, 3) and everything.dtype == np.uint8
    # Each decoded frame is closest to its own source frame (lossy codec, so compare by nearest).
    errors = np.abs(everything[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    assert (errors.argmin(axis=1) == np.arange(NUM_VIDEO_FRAMES)).all()
    assert errors.diagonal().max() < 6
    indices = [9, 2, 2, 0, 11]  # out of order and repeated
    picked = read_video_frames(path, indices, backend=backend)
    np.testing.assert_array_equal(picked, everything[indices])
    # A callable gets the frame count.
    seen = []
    sampled = read_video_frames(path, lambda n: seen.append(n) or [n - 1], backend=backend)
    assert seen == [NUM_VIDEO_FRAMES]
    np.testing.assert_array_equal(sampled[0], everything[-1])
    with pytest.raises(IndexError, match="out of range"):
        read_video_frames(path, [NUM_VIDEO_FRAMES], backend=backend)


def test_backends_agree(tiny_video: tuple[Path, np.ndarray]) -> None:
    pytest.importorskip("decord")
    path, _ = tiny_video
    indices = [11, 0, 5, 6, 3]
    a = read_video_frames(path, indices, backend="decord").astype(np.int16)
    b = read_video_frames(path, indices, backend="pyav").astype(np.int16)
    # Both wrap ffmpeg's H.264 decoder and its yuv420p->RGB conversion: measured identical here.
    assert np.abs(a - b).mean() < 1.0
    assert np.abs(a - b).max() <= 8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "content", [None, b"", b"\x00garbage, not an mp4\xff" * 50], ids=["missing", "empty", "corrupt"]
)
def test_bad_files_raise_media_error(tmp_path: Path, backend: str, content: bytes | None) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: read_video_frames(path, [0], backend=backend), lambda: video_info(path, backend)):
        with pytest.raises(MediaError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert isinstance(info.value, ValueError)


def test_auto_falls_back_to_pyav_where_decord_fails(tmp_path: Path) -> None:
    """decord 0.6 rejects some valid streams (a 48x32 H.264 one here); "auto" must still read them."""
    from rice.data.synthetic import write_mp4

    frames = np.random.default_rng(0).integers(0, 256, size=(3, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "odd.mp4"
    write_mp4(path, frames)
    expected = read_video_frames(path, [0, 2], backend="pyav")
    np.testing.assert_array_equal(read_video_frames(path, [0, 2], backend="auto"), expected)
    assert video_info(path, "auto").num_frames == 3


def test_truncated_video_is_a_media_error_naming_the_file(tiny_video: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """A file cut in half (a download that stopped) loses its index (the mp4 writer puts the moov atom last), so no
    frame of it can be located: every backend raises MediaError naming the file and the fix."""
    path, _ = tiny_video
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for backend in [*BACKENDS, "auto"]:
        with pytest.raises(MediaError) as info:
            read_video_frames(cut, [0], backend=backend)
        assert str(cut) in str(info.value) and "re-download" in str(info.value), backend


def test_load_image_and_draft(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(array).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.jpg").size == (400, 300)
    drafted = load_image(tmp_path / "big.jpg", target_short_side=64)
    assert drafted.mode == "RGB" and min(drafted.size) >= 64 and drafted.size[0] < 400  # reduced DCT scale
    assert load_image(tmp_path / "big.png", target_short_side=64).size == (400, 300)  # no draft for PNG
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "big.png")), array)
    assert [p.name for p in list_frame_files(tmp_path)] == ["big.jpg", "big.png"]


@pytest.mark.parametrize("content", [None, b"", b"not a jpeg at all"], ids=["missing", "empty", "corrupt"])
def test_load_image_errors(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match="x.jpg"):
        load_image(path)


def test_auto_falls_back_to_pyav_per_file_in_a_dataset_and_decord_noise_stays_off_the_console(
    tiny_dataset: Path, capfd: pytest.CaptureFixture
) -> None:
    """A 48x32 H.264 clip trips decord's buffer check but PyAV reads it: with backend "auto" the dataset reads it
    through PyAV (same tensors as backend "pyav"); a garbage file is skipped with ffmpeg's reason in ``skipped``,
    and none of decord's C-level lines ("ERROR opening ...", "moov atom not found") reach fd 2."""
    pytest.importorskip("decord")
    import json

    from rice.data.movingfashion import MovingFashionQueries
    from rice.data.synthetic import write_mp4
    from tests.data.conftest import make_frames

    test = json.loads((tiny_dataset / "test.json").read_text())
    small, garbage = (tiny_dataset / rec["video_paths"][0] for rec in list(test.values())[:2])
    write_mp4(small, make_frames(height=32, width=48), fps=8)
    garbage.write_bytes(b"not an mp4 at all " * 64)
    with pytest.raises(MediaError):
        read_video_frames(small, [0], backend="decord")  # the case: decord alone would call it corrupt
    capfd.readouterr()

    auto = MovingFashionQueries(tiny_dataset, "test", num_frames=4, video_backend="auto", use_prepared_frames=False)
    pyav = MovingFashionQueries(tiny_dataset, "test", num_frames=4, video_backend="pyav", use_prepared_frames=False)
    first, second = auto[0], auto[1]
    assert first["ok"] and first["skipped"] == []
    assert torch.equal(first["frames"], pyav[0]["frames"])
    assert not second["ok"] and garbage.name in second["skipped"][0]
    assert "moov atom not found" in second["skipped"][0] or "Invalid data" in second["skipped"][0]
    err = capfd.readouterr().err
    assert "ERROR" not in err and "moov atom" not in err, err
