"""DecodedImageCache: training items identical with the cache on, a byte budget with LRU eviction, bad files
never cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rice.data.frames import DecodedImageCache, load_image
from rice.data.movingfashion import MovingFashionPairs
from rice.data.prepare import prepare_movingfashion
from rice.data.transforms import build_transform
from rice.data.video import MediaError


def _jpegs(folder: Path, count: int, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        paths.append(folder / f"{i:06d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=95)
    return paths


def test_cache_returns_the_decoded_image_and_keeps_to_its_budget(tmp_path: Path) -> None:
    paths = _jpegs(tmp_path / "imgs", 4)
    one = 32 * 32 * 3
    cache = DecodedImageCache(max_mb=2.5 * one / 2**20)  # room for two images
    first = cache.load_image(paths[0])
    assert np.array_equal(np.asarray(first), np.asarray(load_image(paths[0])))
    assert cache.load_image(paths[0]) is first and (cache.hits, cache.misses) == (1, 1)
    cache.load_image(paths[1])
    cache.load_image(paths[0])  # most recently used: paths[1] is now the oldest
    cache.load_image(paths[2])  # over budget: drops paths[1]
    assert len(cache) == 2 and cache.bytes == 2 * one <= cache.max_bytes
    hits = cache.hits
    assert cache.load_image(paths[0]) is first and cache.hits == hits + 1
    cache.load_image(paths[1])
    assert cache.misses == 4  # paths[1] was evicted and decoded again
    # a draft size is part of the key: another size is another decode
    cache.load_image(paths[2], target_short_side=16)
    assert cache.misses == 5


def test_cache_off_decodes_every_time_and_bad_files_are_never_cached(tmp_path: Path) -> None:
    paths = _jpegs(tmp_path / "imgs", 1)
    off = DecodedImageCache(0)
    assert off.load_image(paths[0]) is not off.load_image(paths[0]) and len(off) == 0
    bad = tmp_path / "imgs" / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    cache = DecodedImageCache(16)
    for _ in range(2):
        with pytest.raises(MediaError, match="bad.jpg"):
            cache.load_image(bad)
    assert len(cache) == 0 and cache.misses == 2
    with pytest.raises(ValueError, match="max_mb"):
        DecodedImageCache(-1)


def test_cached_frame_listing_and_training_items_equal_the_uncached_ones(tiny_dataset: Path) -> None:
    prepare_movingfashion(tiny_dataset, workers=0, fps=8.0, short_side=32, progress=False)
    transform = build_transform(32, train=True, color_jitter=0.4, crop_scale=(0.5, 1.0), per_frame_crops=True)
    plain = MovingFashionPairs(tiny_dataset, num_frames=4, transform=transform, seed=5)
    cached = MovingFashionPairs(tiny_dataset, num_frames=4, transform=transform, seed=5, decoded_cache_mb=64)
    assert plain.describe()["prepared_videos"] == len(plain) > 0
    for epoch in range(3):  # epoch 0 fills the cache, the later ones read from it
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for idx in range(len(plain)):
            a, b = plain[idx], cached[idx]
            assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["image"], b["image"])
            assert torch.equal(a["frame_mask"], b["frame_mask"])
    assert cached.decoded.hits > 0 and len(cached.decoded) == cached.decoded.misses and len(plain.decoded) == 0
