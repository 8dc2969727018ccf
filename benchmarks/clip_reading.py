"""Clip reading: 10 uniformly spaced frames of a 15 s 1280x720 25 fps H.264 clip (GOP 50), resized for 224.

The floor is one PyAV decode pass over the clip (the frames are 37 apart, closer than the 50-frame GOP, so every
frame must be decoded anyway): our reader (``read_video_frames``, backend auto) must stay within 1.2x of it.
decord's ``get_batch``, PyAV seeking per frame and torchcodec (when installed) are reported side by side.

    python benchmarks/clip_reading.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from _common import best_cpu_of, best_of, info_row, row
from _media import h264_clip
from PIL import Image

from rice.data.sampling import sample_frame_indices
from rice.data.video import read_video_frames, video_num_frames

NUM_FRAMES = 10
RESIZE = 256  # short side before the 224 centre crop (the eval transform's resize)


def _resize(frames) -> list[Image.Image]:
    out = []
    for frame in frames:
        image = Image.fromarray(np.asarray(frame))
        scale = RESIZE / min(image.size)
        out.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR))
    return out


def pyav_one_pass(path: Path) -> int:
    """Decode every frame once (frame threads, as our reader uses), converting none: the floor."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def pyav_seek_per_frame(path: Path, indices: list[int]) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate, base = stream.average_rate, stream.time_base
        for index in indices:
            target = int(index / rate / base)
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def torchcodec_read(path: Path, indices: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(str(path), seek_mode="exact").get_frames_at(indices).data.permute(0, 2, 3, 1).numpy()


def run(smoke: bool = False, repeats: int = 3) -> list[dict]:
    if smoke:
        path, repeats = h264_clip(160, 96, seconds=2.0, fps=25, gop=50), 1
    else:
        path = h264_clip()
    count = video_num_frames(path)
    indices = sample_frame_indices(count, NUM_FRAMES, train=False) if count else []
    floor = best_of(lambda: pyav_one_pass(path), repeats)
    ours = best_of(lambda: _resize(read_video_frames(path, indices)), repeats)
    rows = [row("clip reading: rice reader (auto) vs one PyAV pass", ours, floor, "<=", 1.2,
                note=f"{NUM_FRAMES} of {count} frames, resized for 224")]  # fmt: skip
    # CPU time: what a DataLoader worker pays per clip (workers run one clip each, so throughput follows CPU time,
    # while the wall time above favours a reader that spreads one clip over several threads).
    rows.append(info_row("clip reading: rice reader CPU time vs one PyAV pass CPU time",
                         best_cpu_of(lambda: _resize(read_video_frames(path, indices)), repeats),
                         best_cpu_of(lambda: pyav_one_pass(path), repeats), "s", "process CPU seconds"))  # fmt: skip
    others = {
        "decord get_batch": lambda: _resize(read_video_frames(path, indices, backend="decord")),
        "PyAV decode-and-keep (rice pyav)": lambda: _resize(read_video_frames(path, indices, backend="pyav")),
        "PyAV seek per frame": lambda: _resize(pyav_seek_per_frame(path, indices)),
    }
    if importlib.util.find_spec("torchcodec") is not None:
        others["torchcodec get_frames_at"] = lambda: _resize(torchcodec_read(path, indices))
    for name, fn in others.items():
        try:
            rows.append(info_row(f"clip reading: {name}", best_of(fn, repeats), floor, "s", "vs one PyAV pass"))
        except Exception as err:  # an optional decoder that fails here is reported, not fatal
            rows.append(info_row(f"clip reading: {name}", float("nan"), floor, "s", f"failed: {err}"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    for r in run(repeats=parser.parse_args().repeats):
        print(f"{r['name']}: {r['ours']:.3f} s (one pass {r['baseline']:.3f} s, {r['ratio']:.2f}x)")
