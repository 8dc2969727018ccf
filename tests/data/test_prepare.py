"""rice prepare movingfashion / lpr750k on generated data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from rice.data.lpr import load_videoinfo_index, parse_videoinfo_line
from rice.data.movingfashion import MovingFashionPairs
from rice.data.prepare import extract_frames, prepare_lpr750k, prepare_movingfashion
from rice.data.synthetic import write_mp4, write_synthetic_dataset


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def mf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic_dataset(tmp_path_factory.mktemp("mf"), num_products=6, videos_per_product=1,
                                   num_test_products=3, frames=24, size=64, fps=8)
    train = json.loads((root / "train.json").read_text())
    ids = list(train)
    # three bad videos in train: missing, empty, garbage
    (root / "videos/empty.mp4").write_bytes(b"")
    (root / "videos/garbage.mp4").write_bytes(b"\x00\x01not a video at all" * 100)
    train[ids[0]]["video_paths"].append("videos/missing.mp4")
    train[ids[1]]["video_paths"].append("videos/empty.mp4")
    train[ids[2]]["video_paths"].append("videos/garbage.mp4")
    (root / "train.json").write_text(json.dumps(train))
    # a test video shared by two products: both images are ground truth
    test = json.loads((root / "test.json").read_text())
    tids = list(test)
    test[tids[1]]["video_paths"] = list(test[tids[0]]["video_paths"])
    (root / "test.json").write_text(json.dumps(test))
    return root


def test_prepare_movingfashion_end_to_end(mf_root: Path) -> None:
    report = prepare_movingfashion(mf_root, workers=2, progress=False, console=quiet())
    assert report.videos == 6 + 3 - 1 + 3  # train + test (one shared) + the three bad ones
    assert report.prepared == report.videos - 3 and report.skipped == 0
    assert {(Path(v).name, kind) for v, kind, _ in report.problems} == {
        ("missing.mp4", "missing"), ("empty.mp4", "empty"), ("garbage.mp4", "undecodable")}
    listed = (mf_root / "prepare_report.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in listed) == sorted(
        ["videos/missing.mp4", "videos/empty.mp4", "videos/garbage.mp4"])
    assert "3 missing or undecodable" in report.summary()

    # frames: 24 frames at 8 fps = 3 s -> 3 frames at 1 fps, JPEG, 64 px kept (never enlarged), .done last
    train = json.loads((mf_root / "train.json").read_text())
    stem = Path(next(iter(train.values()))["video_paths"][0]).stem
    folder = mf_root / "frames" / stem
    assert sorted(p.name for p in folder.iterdir()) == [".done", "000001.jpg", "000002.jpg", "000003.jpg"]
    with Image.open(folder / "000001.jpg") as img:
        assert img.format == "JPEG" and img.size == (64, 64)
    assert not (mf_root / "frames/garbage").exists() and not (mf_root / "frames/empty").exists()

    # annotation files point at the prepared jpgs and keep every positive of a shared video
    ann = mf_root / "annotations"
    test = json.loads((mf_root / "test.json").read_text())
    shared = Path(next(iter(test.values()))["video_paths"][0]).stem
    v2g = json.loads((ann / "video_to_gt.json").read_text())
    assert len(v2g[shared]["gt"]) == 2 and len(v2g) == 2
    queries = json.loads((ann / "query_tenframes.json").read_text())
    assert all((mf_root / f).is_file() for q in queries.values() for f in q["frames"])
    assert len((ann / "gallery_full.txt").read_text().splitlines()) == 3
    assert len((ann / "videoid_videopath_imagepath_srcid.txt").read_text().splitlines()) == 3
    lines = (ann / "training_videoinfo_full.txt").read_text().splitlines()
    assert len(lines) == 6  # the three bad videos have no frames
    cols = lines[0].split("\t")
    assert len(cols) == 5 and all((mf_root / f).is_file() for f in json.loads(cols[1]))

    # the dataset takes the fast path
    ds = MovingFashionPairs(mf_root, "train", num_frames=4, seed=0)
    assert ds.num_prepared == 6

    # second run: nothing decoded again
    report2 = prepare_movingfashion(mf_root, workers=1, progress=False, console=quiet())
    assert report2.prepared == 0 and report2.skipped == report.videos - 3 and len(report2.problems) == 3

    # a killed run leaves a folder without .done: only that one is redone
    (folder / ".done").unlink()
    (folder / "000002.jpg").unlink()
    report3 = prepare_movingfashion(mf_root, workers=0, progress=False, console=quiet())
    assert report3.prepared == 1 and (folder / "000002.jpg").is_file() and (folder / ".done").is_file()


def test_extract_frames_fps_and_resize(tmp_path: Path) -> None:
    frames = np.zeros((20, 96, 160, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(20)[:, None, None] * 12
    write_mp4(tmp_path / "v.mp4", frames, fps=4)  # 5 s
    assert extract_frames(tmp_path / "v.mp4", tmp_path / "out", fps=2.0, short_side=48) == 10
    with Image.open(tmp_path / "out/000001.jpg") as img:
        assert img.size == (80, 48)


def _videoinfo_line(clip: str, n: int, image: str) -> str:
    frames = [f"training_video_00/{clip}/{clip}-{i:04d}.jpg" for i in range(1, n + 1)]
    return "\t".join([clip, repr(frames), "[]", image, f"training_image/{image}.jpg", "title", "3", "cat", "1", "asr"])


def test_prepare_lpr750k_reports_missing_and_indexes(tmp_path: Path) -> None:
    root = tmp_path / "lpr"
    (root / "annotations").mkdir(parents=True)
    for name in ("query", "gallery", "training_image"):
        (root / name).mkdir()
    info = root / "annotations/training_videoinfo_641821.txt"
    lines = [_videoinfo_line(f"7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-{i}-{i + 5}", 3, f"img{i}") for i in range(50)]
    for i in range(50):  # the clip folders of a part that was extracted (its other entries are missing)
        (root / f"training_video_00/7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-{i}-{i + 5}").mkdir(parents=True)
    lines.insert(10, "broken line without tabs")
    lines.insert(20, "a\t__import__('os').system('echo pwned')\tx\ty\tz")  # never evaluated
    info.write_text("\n".join(lines) + "\n")
    report = prepare_lpr750k(root, console=quiet())
    assert "training_video_01/" in report.missing and "annotations/gallery_main.txt" in report.missing
    assert report.indexed == {info.name: 50} and report.bad_lines == {info.name: 2}
    assert "--parts" in report.summary()
    index = load_videoinfo_index(info)
    assert index.count == 50
    with open(info, "rb") as fh:
        fh.seek(int(index.offsets[12]))
        rec = parse_videoinfo_line(fh.readline().decode())
    assert rec.image_id == "img12" and len(rec.frames) == 3
