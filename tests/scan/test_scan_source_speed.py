"""What makes a scan cheaper than decoding everything must not change what it sees: the end of each keyframe
interval that no sample needs is left undecoded (only before IDR pictures), and a CPU encoder keeps to its
share of the cores while the decoder runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rice.scanning import scan
from rice.scanning.source import VideoSource

FPS = 25


def _write(path: Path, seconds: float, x264: str, gop: int = 50) -> Path:
    """A small H.264 file with a moving texture (every frame differs), a keyframe every ``gop`` frames."""
    import av

    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, size=(48 + 64, 64 + 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "medium", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:{x264}"}
        for i in range(int(seconds * FPS)):
            frame = texture[(2 * i) % 64 : (2 * i) % 64 + 48, (3 * i) % 64 : (3 * i) % 64 + 64]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _straight_pass(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """Every frame, decoded with PyAV alone: times from the first frame, RGB."""
    import av

    times, frames = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.append(float(frame.time))
            frames.append(frame.to_ndarray(format="rgb24"))
    return [t - times[0] for t in times], frames


def _nearest(times: list[float], target: float) -> int:
    """The frame nearest to ``target`` (the earlier of two at the same distance)."""
    return min(range(len(times)), key=lambda k: (abs(times[k] - target), k))


def _sampled(path: Path, dt: float) -> tuple[list, VideoSource]:
    source = VideoSource(path)
    with source:
        samples = list(source.frames(lambda j: (j + 0.5) * dt))
    return samples, source


@pytest.mark.parametrize("dt", [1.0, 1.4, 3.3])
def test_undecoded_interval_ends_change_no_sample(tmp_path, dt):
    """A 12-s file, keyframe every 2 s, B-frames: each sample is the frame nearest to its time in a plain decode
    of every frame, pixel for pixel, no gap is reported, and fewer frames were decoded."""
    path = _write(tmp_path / "gop2s.mp4", 12.0, "bframes=3:b-pyramid=normal")
    times, frames = _straight_pass(path)
    samples, source = _sampled(path, dt)
    targets = [(j + 0.5) * dt for j in range(int(12.0 / dt - 0.5) + 1)]
    assert [s.index for s in samples] == list(range(len(targets)))
    for sample, target in zip(samples, targets):
        k = _nearest(times, target)
        assert sample.time == pytest.approx(times[k])
        np.testing.assert_array_equal(sample.rgb, frames[k])
    assert source.gaps == []
    assert source.trimmed > 0 and source.decoded + source.trimmed == len(frames)


def test_open_gop_keyframes_are_not_trimmed_before(tmp_path):
    """x264's open GOPs: keyframes are I pictures that later frames may look past, so nothing is left out (the
    container flags them as keyframes all the same) and every sample is the straight pass's frame."""
    path = _write(tmp_path / "open.mp4", 12.0, "bframes=3:open-gop=1", gop=25)
    times, frames = _straight_pass(path)
    samples, source = _sampled(path, 1.4)
    assert source.trimmed == 0 and source.gaps == []
    for sample in samples:
        np.testing.assert_array_equal(sample.rgb, frames[_nearest(times, sample.time)])


def test_a_cpu_encoder_keeps_to_its_threads_while_decoding_and_gives_them_back(scan_setup, tmp_path):
    """encode_threads=1 beside the decoder: the first batch (the decoder still has 60 samples to go, far more
    than the queue holds) is encoded on one intra-op thread; torch's count is what it was once the scan ends."""
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index

    model = load(scan_setup.checkpoint)
    index = Index.load(scan_setup.index_dir, model=model)
    path = _write(tmp_path / "long.mp4", 80.0, "bframes=0", gop=250)
    seen: list[int] = []
    hook = model.encoder.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = scan(model, index, path, window=2.0, stride=1.0, encode_threads=1)
        run.run()
        assert run.timeline.stats["encoded_frames"] == 80
        assert seen[0] == 1 and set(seen) <= {1, 2}
        assert torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)


def test_overlapping_scans_give_torch_its_thread_count_back(scan_setup, tmp_path):
    """torch's intra-op count is one for the process: two scans that overlap (the service's scan workers) must
    leave it as it was before the first began, whichever ends first."""
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index
    from rice.scanning import WindowResult

    model = load(scan_setup.checkpoint)
    index = Index.load(scan_setup.index_dir, model=model)
    path = _write(tmp_path / "long.mp4", 80.0, "bframes=0", gop=250)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = iter(scan(model, index, path, window=2.0, stride=1.0, encode_threads=1))
        second = iter(scan(model, index, path, window=2.0, stride=1.0, encode_threads=1))
        assert isinstance(next(first), WindowResult)  # encoding on one thread beside its decoder
        assert isinstance(next(second), WindowResult)  # began while the first had torch on one thread
        for _ in first:
            pass
        for _ in second:
            pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
