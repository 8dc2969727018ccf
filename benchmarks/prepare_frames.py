"""Frame preparation: `rice prepare movingfashion` on 20 clips (15 s, 1280x720, 25 fps, H.264) against the public
code's approach: the ffmpeg CLI at fps=1 writing full-size PNG, one process per video, as many at once as our
workers. Targets: >= 2x faster wall time (ratio ours/baseline <= 0.5) and >= 5x less disk (ratio <= 0.2).

Needs the ``bench`` extra (``imageio-ffmpeg`` ships the ffmpeg binary).

    python benchmarks/prepare_frames.py [--videos 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import row, skipped_row
from _media import copies_dataset, h264_clip

from rice.data.prepare import prepare_movingfashion


def _disk(folder: Path, pattern: str) -> int:
    return sum(f.stat().st_size for f in folder.rglob(pattern))


def public_extraction(videos: list[Path], out: Path, workers: int) -> None:
    """The public code's way: ``ffmpeg -i video -vf fps=1 out/%06d.png``, one process per video."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()

    def one(video: Path) -> None:
        folder = out / video.stem
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(video), "-vf", "fps=1", str(folder / "%06d.png")]
        subprocess.run(cmd, check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, videos))


def run(smoke: bool = False, videos: int = 20, workers: int = 2) -> list[dict]:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return [skipped_row("prepare frames", "needs the bench extra: pip install imageio-ffmpeg")]
    clip = h264_clip(160, 96, seconds=3.0) if smoke else h264_clip()
    videos = 2 if smoke else videos
    with tempfile.TemporaryDirectory(prefix="rice-bench-prepare-") as tmp:
        root = Path(tmp) / "mf"
        paths = copies_dataset(root, videos, clip)
        tic = time.perf_counter()
        public_extraction(paths, Path(tmp) / "png", workers)
        public_s = time.perf_counter() - tic
        public_bytes = _disk(Path(tmp) / "png", "*.png")
        shutil.rmtree(root / "frames", ignore_errors=True)
        tic = time.perf_counter()
        prepare_movingfashion(root, workers=workers, progress=False)
        ours_s = time.perf_counter() - tic
        ours_bytes = _disk(root / "frames", "*.jpg")
    note = f"{len(paths)} videos, {workers} workers"
    return [
        row("prepare: rice prepare vs ffmpeg fps=1 PNG (time)", ours_s, public_s, "<=", 0.5, note=note),
        row("prepare: rice prepare vs ffmpeg fps=1 PNG (disk)", ours_bytes / 2**20, public_bytes / 2**20, "<=", 0.2,
            unit="MiB", note=note),
    ]  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for r in run(videos=args.videos, workers=args.workers):
        print(f"{r['name']}: {r['ours']:.3g} vs {r['baseline']:.3g} {r['unit']} (ratio {r['ratio']:.3f})")
