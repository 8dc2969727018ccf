"""Opening the LPR750K training set: LPRTrainPairs over its saved line index vs parsing every videoinfo line.

A training run (and each DataLoader worker) opens the dataset; with the index that `rice prepare lpr750k` saves
beside the videoinfo file it reads one array of byte offsets instead of parsing 641,821 lines. Both are timed
in the same run on the same generated file; the script prints the ratio (this replaced a wall-clock assert in
tests/data/test_lpr.py, which does not belong in a test).

    python benchmarks/lpr_open.py [--scale 0.1] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import best_of, row

from rice.data.lpr import LPRTrainPairs, build_videoinfo_index, parse_videoinfo_line

FULL_LINES = 641_821


def write_videoinfo(root: Path, lines: int) -> Path:
    """A training videoinfo file in the official format (10 frame paths per line), and its index."""
    path = root / "annotations" / "training_videoinfo_641821.txt"
    path.parent.mkdir(parents=True)
    with open(path, "w") as fh:
        for i in range(lines):
            clip = f"7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-{1667916122888 + i}-{1667916252390 + i}"
            frames = [f"training_video_01/{clip}/{clip}-{k:04d}.jpg" for k in range(1, 11)]
            image = f"fff8b484-2eeb-11ee-b7bb-{i:012d}"
            fh.write("\t".join([clip, repr(frames), "[]", image, f"training_image/{image}.jpg", "Women's knit cardigan",
                                "3", "Women's wear", "550021", "asr text"]) + "\n")  # fmt: skip
    build_videoinfo_index(path)
    return path


def run(smoke: bool = False, scale: float = 0.1, repeats: int = 3) -> list[dict]:
    """Open the dataset through its saved index vs parse every line (target: at least 10x faster)."""
    if smoke:
        scale, repeats = 0.002, 1
    lines = max(10, int(FULL_LINES * scale))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_videoinfo(Path(tmp), lines)
        ours = best_of(lambda: LPRTrainPairs(tmp, num_frames=10, seed=0), repeats)

        def parse_all() -> None:
            with open(path) as fh:
                for line in fh:
                    parse_videoinfo_line(line)

        baseline = best_of(parse_all, repeats)
        assert len(LPRTrainPairs(tmp, num_frames=10, seed=0)) == lines
    return [row("lpr_open: open LPR750K training set", ours, baseline, "<=", 0.1,
                note=f"{lines} videoinfo lines; baseline = parse every line")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of LPR750K's 641,821 lines")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    (result,) = run(args.smoke, args.scale, args.repeats)
    print(f"{result['note']}: open with the index {result['ours'] * 1e3:.1f} ms, parse every line "
          f"{result['baseline'] * 1e3:.0f} ms: {1 / result['ratio']:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
