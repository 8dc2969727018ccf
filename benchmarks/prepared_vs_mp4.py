"""Prepared JPEG frames vs decoding mp4 on the fly: time one pass over MovingFashion training pairs.

Both passes use the same items, seed and transform (``MovingFashionPairs``, 10 frames, 224 px CLIP transform);
only ``use_prepared_frames`` differs. The suite's run (``run``, benchmarks/run.py) copies one textured 480 px
H.264 clip into every video of a MovingFashion-layout dataset; this script alone renders synthetic scenes
(``write_synthetic_dataset``, slow at this size). Real MovingFashion videos (720p-1080p, ~30 fps, ~14 s) cost
far more to decode than either, so the ratio here is a lower bound.

    python benchmarks/prepared_vs_mp4.py --products 16 --frames 240 --size 480 --fps 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rice.data.movingfashion import MovingFashionPairs
from rice.data.prepare import prepare_movingfashion
from rice.data.synthetic import write_synthetic_dataset


def one_pass(root: Path, prepared: bool, backend: str) -> float:
    dataset = MovingFashionPairs(root, "train", num_frames=10, seed=0, use_prepared_frames=prepared,
                                 video_backend=backend)
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


def run(smoke: bool = False) -> list[dict]:
    """The suite's entry (benchmarks/run.py): synthetic 480 px videos, prepared frames must be >= 5x faster."""
    from _common import row
    from _media import copies_dataset, h264_clip

    products, seconds, size, fps = (5, 2.0, 64, 8) if smoke else (20, 15.0, 480, 16)
    with tempfile.TemporaryDirectory(prefix="rice-bench-") as tmp:
        root = Path(tmp)
        # Every video is a copy of one textured H.264 clip: rendering synthetic scenes at 480 px takes far longer
        # than the benchmark itself.
        copies_dataset(root, products, h264_clip(size, size, seconds=seconds, fps=fps, gop=2 * fps))
        frames = int(seconds * fps)
        prepare_movingfashion(root, workers=2, progress=False)
        one_pass(root, True, "auto")  # warm the page cache for both
        one_pass(root, False, "auto")
        repeats = 1 if smoke else 2
        mp4 = min(one_pass(root, False, "auto") for _ in range(repeats))
        jpg = min(one_pass(root, True, "auto") for _ in range(repeats))
        items = len(MovingFashionPairs(root, "train", num_frames=10))
    note = f"{items} training items, {frames} frames at {size} px, {fps} fps"
    return [row("prepared frames vs decoding mp4 (one pass)", jpg, mp4, "<=", 1 / 5, note=note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=16)
    parser.add_argument("--frames", type=int, default=240, help="frames per video")
    parser.add_argument("--size", type=int, default=480, help="video side in pixels")
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--backend", default="auto", help="mp4 decoder for the on-the-fly pass")
    parser.add_argument("--root", type=Path, default=None, help="reuse/keep the generated data here")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="rice-bench-"))
    if not (root / "train.json").exists():
        t = time.perf_counter()
        write_synthetic_dataset(root, num_products=args.products, videos_per_product=1, num_test_products=2,
                                frames=args.frames, size=args.size, fps=args.fps)
        print(f"generated {args.products} videos ({args.frames} frames, {args.size}px, {args.fps} fps) "
              f"in {time.perf_counter() - t:.1f}s under {root}")
    t = time.perf_counter()
    prepare_movingfashion(root, workers=2, progress=False)
    print(f"prepare: {time.perf_counter() - t:.1f}s")
    one_pass(root, True, args.backend)  # warm the page cache for both
    one_pass(root, False, args.backend)
    mp4 = min(one_pass(root, False, args.backend) for _ in range(2))
    jpg = min(one_pass(root, True, args.backend) for _ in range(2))
    n = len(MovingFashionPairs(root, "train", num_frames=10))  # the items timed (not --products: --root may be reused)
    print(f"mp4 on the fly: {mp4:.2f}s ({1000 * mp4 / n:.0f} ms/item); prepared frames: {jpg:.2f}s "
          f"({1000 * jpg / n:.0f} ms/item); prepared is {mp4 / jpg:.1f}x faster")


if __name__ == "__main__":
    main()
