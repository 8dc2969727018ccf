"""The synthetic MovingFashion-layout generator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rice.data import read_video_frames, video_info, write_synthetic_dataset
from rice.data.movingfashion import load_split
from rice.data.synthetic import _product_specs


def test_layout_and_split_design(tiny_dataset_master: Path) -> None:
    root = tiny_dataset_master
    train, test = load_split(root, "train"), load_split(root, "test")
    assert len(train) == len(test) == 6
    train_by_id = {r.product_id: r for r in train}
    for record in test:
        seen = train_by_id[record.product_id]
        assert record.img_path == seen.img_path and record.source == seen.source
        assert len(record.video_paths) == 1 and not set(record.video_paths) & set(seen.video_paths)
    for record in train:
        image = Image.open(root / record.img_path)
        assert image.format == "JPEG" and image.size == (48, 48)
        for video in record.video_paths:
            assert video.startswith("videos/") and video.endswith(".mp4")
            info = video_info(root / video, "pyav")
            assert (info.num_frames, info.width, info.height) == (12, 32, 32)
    # Train and test videos of a product differ (different seed: motion, background, distractors).
    record = test[0]
    a = read_video_frames(root / record.video_paths[0], [0, 6], backend="pyav").astype(float)
    b = read_video_frames(root / train_by_id[record.product_id].video_paths[0], [0, 6], backend="pyav").astype(float)
    assert np.abs(a - b).mean() > 10


def test_same_seed_is_identical_and_other_seed_differs(tmp_path: Path, tiny_dataset_master: Path) -> None:
    kwargs = dict(num_products=6, videos_per_product=1, frames=12, size=32, image_size=48)
    again = write_synthetic_dataset(tmp_path / "again", seed=3, **kwargs)
    for name in ("train.json", "test.json"):
        assert (again / name).read_bytes() == (tiny_dataset_master / name).read_bytes()
    for record in load_split(again, "train") + load_split(again, "test"):
        assert (again / record.img_path).read_bytes() == (tiny_dataset_master / record.img_path).read_bytes()
        for video in record.video_paths:
            np.testing.assert_array_equal(
                read_video_frames(again / video, backend="pyav"),
                read_video_frames(tiny_dataset_master / video, backend="pyav"),
            )
    other = write_synthetic_dataset(tmp_path / "other", seed=4, **kwargs)
    assert (other / "train.json").read_bytes() != (again / "train.json").read_bytes()


def test_products_are_distinct_and_colour_is_not_enough() -> None:
    specs = _product_specs(96, 0.3, np.random.default_rng(0))
    identities = {(s.shape, s.scheme, s.pattern, s.logo) for s in specs}
    assert len(identities) == 96
    schemes = Counter(s.scheme for s in specs)
    assert len(schemes) <= 6 and max(schemes.values()) >= 16  # many products share each colour scheme
    assert 0 < sum(s.source == 0 for s in specs) < 96


def test_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        write_synthetic_dataset(tmp_path, num_products=1, size=33)
    with pytest.raises(ValueError, match="num_test_products"):
        write_synthetic_dataset(tmp_path, num_products=2, num_test_products=3)


def test_partial_test_split(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path, num_products=3, num_test_products=1, frames=4, size=16)
    assert len(json.loads((root / "test.json").read_text())) == 1
    assert all(len(r.video_paths) == 2 for r in load_split(root, "train"))


def test_hard_difficulty(tmp_path: Path) -> None:
    """difficulty="hard": every product hard, test clips are new clips of training products, seeded, and the
    clips change more over time than normal ones (moving background, lighting swings, occluders)."""
    kwargs = dict(num_products=3, videos_per_product=1, frames=6, size=32, seed=2)
    hard = write_synthetic_dataset(tmp_path / "hard", difficulty="hard", **kwargs)
    again = write_synthetic_dataset(tmp_path / "again", difficulty="hard", **kwargs)
    normal = write_synthetic_dataset(tmp_path / "normal", **kwargs)
    train, test = (json.loads((hard / f"{s}.json").read_text()) for s in ("train", "test"))
    assert set(train) == set(test) and all(r["source"] == 0 for r in train.values())
    assert all(set(train[p]["video_paths"]).isdisjoint(test[p]["video_paths"]) for p in train)
    assert json.loads((hard / "synthetic.json").read_text())["difficulty"] == "hard"

    def clip(root: Path, product: str) -> np.ndarray:
        path = root / json.loads((root / "train.json").read_text())[product]["video_paths"][0]
        return read_video_frames(path).astype(np.float32)

    changes = {"hard": [], "normal": []}
    for product in train:
        np.testing.assert_array_equal(clip(hard, product), clip(again, product))  # seeded
        for name, root in (("hard", hard), ("normal", normal)):
            frames = clip(root, product)
            changes[name].append(frames.mean(axis=(1, 2, 3)).std())  # the lighting swings over the clip
    assert np.mean(changes["hard"]) > 1.5 * np.mean(changes["normal"]), changes
    with pytest.raises(ValueError, match="difficulty"):
        write_synthetic_dataset(tmp_path / "bad", difficulty="extreme", **kwargs)
