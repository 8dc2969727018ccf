"""`rice prepare movingfashion --lossless`: full-size PNG frames, as the public code reads them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image
from rich.console import Console

from rice.data.movingfashion import MovingFashionQueries
from rice.data.prepare import extract_frames, prepare_movingfashion
from rice.data.synthetic import write_mp4, write_synthetic_dataset


def test_lossless_frames_are_the_decoded_frames_at_full_size(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (12, 96, 160, 3), dtype=np.uint8)
    write_mp4(tmp_path / "v.mp4", frames, fps=4)  # 3 s
    assert extract_frames(tmp_path / "v.mp4", tmp_path / "out", fps=1.0, short_side=48, lossless=True) == 3
    with av.open(str(tmp_path / "v.mp4")) as container:  # the independent decode: every 4th frame at 4 fps
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    written = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in written] == ["000001.png", "000002.png", "000003.png"]
    for path, expected in zip(written, decoded[::4]):
        with Image.open(path) as img:
            assert img.size == (160, 96)  # full size: short_side is ignored
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), expected)  # lossless


def test_prepare_lossless_dataset_reads_png_frames(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path, num_products=3, videos_per_product=1, num_test_products=2, frames=16,
                                   size=32, fps=8)
    prepare_movingfashion(root, workers=0, lossless=True, progress=False, console=Console(file=io.StringIO()))
    queries = json.loads((root / "annotations/query_tenframes.json").read_text())
    frames = [f for q in queries.values() for f in q["frames"]]
    assert frames and all(f.endswith(".png") and (root / f).is_file() for f in frames)
    item = MovingFashionQueries(root, "test", num_frames=4)[0]
    assert item["ok"] and int(item["frame_mask"].sum()) == 2  # 2 s of video at 1 fps
