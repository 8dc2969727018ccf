"""Test media for the benchmarks: an H.264 clip shaped like a MovingFashion video (generated once and cached), and
a MovingFashion-layout dataset whose every video is a copy of it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "rice-bench"


def h264_clip(width: int = 1280, height: int = 720, seconds: float = 15.0, fps: int = 25, gop: int = 50) -> Path:
    """A ``seconds`` long ``width``x``height`` H.264 mp4 at ``fps`` with a keyframe every ``gop`` frames.

    The picture moves and carries smooth texture everywhere, so the decoder does real work on every macroblock at
    a camera-like bitrate (a flat picture decodes unrealistically fast, pixel noise unrealistically slowly).
    Cached by its parameters under the temp folder.
    """
    import av

    path = CACHE / f"clip_{width}x{height}_{seconds:g}s_{fps}fps_gop{gop}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    from PIL import Image

    coarse = rng.integers(0, 256, size=((height + 64) // 8, (width + 64) // 8, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((width + 64, height + 64), Image.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width]
    partial = path.with_suffix(".part.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(int(seconds * fps)):
            dx, dy = (3 * i) % 64, (2 * i) % 64
            frame = texture[dy : dy + height, dx : dx + width].copy()
            frame[..., 0] = ((xx + 4 * i) % 256).astype(np.uint8) // 2 + frame[..., 0] // 2  # a moving gradient
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def copies_dataset(root: Path, videos: int, clip: Path, test: int | None = None) -> list[Path]:
    """A MovingFashion-layout dataset of ``videos`` videos, each a copy of ``clip``, ``test`` of them (default a
    fifth, at least one) in the test split; returns the video paths. Rendering synthetic scenes at camera sizes
    takes longer than most benchmarks, so the synthetic generator only writes the annotations and shop images."""
    from rice.data.movingfashion import load_split
    from rice.data.synthetic import write_synthetic_dataset

    test = max(1, videos // 5) if test is None else test
    write_synthetic_dataset(root, num_products=videos - test, videos_per_product=1, num_test_products=test,
                            frames=4, size=32)  # fmt: skip
    rels = dict.fromkeys(v for split in ("train", "test") for rec in load_split(root, split) for v in rec.video_paths)
    paths = [root / rel for rel in rels]
    for path in paths:
        shutil.copyfile(clip, path)
    return paths
