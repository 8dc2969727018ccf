"""MovingFashion datasets on a tiny generated root, with missing, empty and corrupt media."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from rice.config import DataConfig
from rice.data import (
    CLIP_MEAN,
    CLIP_STD,
    MovingFashionGallery,
    MovingFashionPairs,
    MovingFashionQueries,
    build_eval_datasets,
    build_train_dataset,
    build_transform,
    collate_batch,
)
from rice.data.movingfashion import image_id_of, load_split, video_id_of

T = 4


def _split(root: Path, split: str) -> dict:
    return json.loads((root / f"{split}.json").read_text())


def _damage(root: Path, split: str) -> dict[str, str]:
    """Break the videos of products 1, 2, 3: missing, empty (0 bytes), corrupt (garbage bytes)."""
    records = list(_split(root, split).values())
    bad = {"missing": records[1]["video_paths"][0], "empty": records[2]["video_paths"][0],
           "corrupt": records[3]["video_paths"][0]}  # fmt: skip
    (root / bad["missing"]).unlink()
    (root / bad["empty"]).write_bytes(b"")
    (root / bad["corrupt"]).write_bytes(b"\x13\x37 definitely not an mp4 " * 64)
    return bad


def _transform(train: bool):  # noqa: ANN202
    return build_transform(32, train=train, resize_size=36)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_pairs_skip_and_report_bad_videos(tiny_dataset: Path, backend: str) -> None:
    bad = _damage(tiny_dataset, "train")
    ds = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(True), video_backend=backend, seed=0)
    assert len(ds) == 6
    assert ds.missing == [bad["missing"]] and ds.empty == [bad["empty"]]
    info = ds.describe()
    assert info["missing_files"] == 1 and info["empty_files"] == 1 and info["items"] == 6
    items = [ds[i] for i in range(len(ds))]
    reported = list(dict.fromkeys(entry for item in items for entry in item["skipped"]))
    assert len(reported) == 3
    for kind, rel in bad.items():
        (entry,) = [e for e in reported if rel in e]
        assert entry.startswith(str(tiny_dataset / rel) + ":"), entry
    # Items 1..3 are all replaced by item 4 (the next readable one); the others are themselves.
    assert [item["video_id"] for item in items[1:4]] == [items[4]["video_id"]] * 3
    assert len(items[1]["skipped"]) == 3 and items[3]["skipped"] == [reported[-1]]
    for item in items:
        assert item["frames"].shape == (T, 3, 32, 32) and item["frame_mask"].dtype == torch.bool
        assert item["image"].shape == (3, 32, 32) and item["frame_mask"][0]
        assert video_id_of(item["video_id"]) == item["video_id"]
    batch = collate_batch(items)
    assert batch["frames"].shape == (6, T, 3, 32, 32) and len(batch["skipped"]) == 3 + 2 + 1


def test_pairs_all_bad_raise(tiny_dataset: Path) -> None:
    for record in _split(tiny_dataset, "train").values():
        (tiny_dataset / record["video_paths"][0]).write_bytes(b"")
    ds = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(True))
    assert len(ds.empty) == 6
    with pytest.raises(RuntimeError, match="unreadable"):
        ds[0]


def test_pairs_bad_image_is_skipped(tiny_dataset: Path) -> None:
    record = list(_split(tiny_dataset, "train").values())[0]
    (tiny_dataset / record["img_path"]).write_bytes(b"broken jpeg")
    item = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(True))[0]
    assert len(item["skipped"]) == 1 and record["img_path"] in item["skipped"][0]
    assert item["image_id"] != image_id_of(record["img_path"])


def test_pairs_seeded_and_train_randomness(tiny_dataset: Path) -> None:
    ds = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(True), seed=1, tail_drop_prob=1.0)
    a, b = ds[2], ds[2]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["image"], b["image"])
    masks = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        masks.add(int(ds[2]["frame_mask"].sum()))
    assert len(masks) > 1 and min(masks) >= 1  # tail dropping varies the clip length
    # Eval-mode pairs: centres, no tail drop, full clips.
    still = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(False), train=False, tail_drop_prob=1.0)
    assert still[2]["frame_mask"].all() and torch.equal(still[2]["frames"], still[2]["frames"])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_queries_mark_bad_videos_not_ok(tiny_dataset: Path, backend: str) -> None:
    bad = _damage(tiny_dataset, "test")
    ds = MovingFashionQueries(tiny_dataset, num_frames=T, transform=_transform(False), video_backend=backend)
    assert len(ds) == 6
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        assert item["group"] == "" and item["source"] in (0, 1)
    by_id = {item["query_id"]: item for item in items}
    for rel in bad.values():
        item = by_id[video_id_of(rel)]
        assert item["ok"] is False and not item["frame_mask"].any() and item["frames"].abs().sum() == 0
        assert len(item["skipped"]) == 1 and str(tiny_dataset / rel) in item["skipped"][0]
    good = [item for item in items if item["ok"]]
    assert len(good) == 3 and all(item["frame_mask"].all() and not item["skipped"] for item in good)
    # Eval is deterministic.
    assert torch.equal(ds[0]["frames"], items[0]["frames"])


def test_shared_video_keeps_every_positive(tiny_dataset: Path) -> None:
    test = _split(tiny_dataset, "test")
    first, second = list(test)[:2]
    test[second]["video_paths"] = list(test[first]["video_paths"])
    (tiny_dataset / "test.json").write_text(json.dumps(test))
    ds = MovingFashionQueries(tiny_dataset, num_frames=T, transform=_transform(False))
    assert len(ds) == 5 and ds.describe()["shared_videos"] == 1
    item = ds[0]
    assert item["gt_ids"] == [image_id_of(test[first]["img_path"]), image_id_of(test[second]["img_path"])]
    assert item["source"] == test[first]["source"]


def test_gallery(tiny_dataset: Path) -> None:
    test = _split(tiny_dataset, "test")
    broken = list(test.values())[4]["img_path"]
    (tiny_dataset / broken).write_bytes(b"\xff\xd8 truncated")
    ds = MovingFashionGallery(tiny_dataset, transform=_transform(False))
    assert len(ds) == 6 and ds.empty == [] and ds.missing == []
    items = [ds[i] for i in range(len(ds))]
    assert [item["image_id"] for item in items] == [image_id_of(r["img_path"]) for r in test.values()]
    assert items[4]["ok"] is False and broken in items[4]["skipped"][0] and items[4]["image"].abs().sum() == 0
    assert all(item["ok"] and item["image"].shape == (3, 32, 32) for i, item in enumerate(items) if i != 4)
    assert image_id_of("imgs/88123_in_pp.jpg") == "88123_in_pp" and image_id_of("imgs/a.b.jpg") == "a"


def test_prepared_frames_are_used_when_done(tiny_dataset: Path) -> None:
    record = list(_split(tiny_dataset, "test").values())[0]
    folder = tiny_dataset / "frames" / video_id_of(record["video_paths"][0])
    folder.mkdir(parents=True)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (40, 30), colour).save(folder / f"{i + 1:06d}.jpg", quality=100)
    transform = _transform(False)
    # Without the .done marker the video is read (12 frames -> T valid).
    assert MovingFashionQueries(tiny_dataset, num_frames=T, transform=transform)[0]["frame_mask"].all()
    (folder / ".done").touch()
    ds = MovingFashionQueries(tiny_dataset, num_frames=T, transform=transform)
    assert ds.describe()["prepared_videos"] == 1
    item = ds[0]
    assert item["frame_mask"].tolist() == [True, True, True, False]
    mean = torch.tensor(CLIP_MEAN).view(3, 1)
    std = torch.tensor(CLIP_STD).view(3, 1)
    rgb = item["frames"][:3].flatten(2).mean(-1) * std.T + mean.T  # (3 frames, 3 channels) in [0, 1]
    np.testing.assert_allclose(rgb.numpy(), np.array(colours) / 255.0, atol=0.02)
    # The prepared frames also serve when the mp4 is gone, and can be switched off.
    (tiny_dataset / record["video_paths"][0]).unlink()
    assert MovingFashionQueries(tiny_dataset, num_frames=T, transform=transform)[0]["ok"]
    off = MovingFashionQueries(tiny_dataset, num_frames=T, transform=transform, use_prepared_frames=False)
    assert off.missing == [record["video_paths"][0]] and off[0]["ok"] is False
    pairs = MovingFashionPairs(tiny_dataset, num_frames=T, transform=_transform(True), seed=0, tail_drop_prob=0.0)
    train_record = list(_split(tiny_dataset, "train").values())[0]
    assert pairs[0]["video_id"] == video_id_of(train_record["video_paths"][0])


def test_validation_errors(tmp_path: Path, tiny_dataset: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rice download movingfashion"):
        MovingFashionPairs(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(FileNotFoundError, match="train.json"):
        load_split(tmp_path / "empty_root", "train")
    with pytest.raises(ValueError, match="unknown MovingFashion split"):
        load_split(tiny_dataset, "val")
    train = _split(tiny_dataset, "train")
    product = list(train)[2]
    for field, value, pattern in [("video_paths", [], "video_paths"), ("source", 7, "source"),
                                  ("img_path", None, "img_path")]:  # fmt: skip
        broken = json.loads(json.dumps(train))
        broken[product][field] = value
        (tiny_dataset / "train.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=f"train.json: product '{product}': '{pattern}'"):
            load_split(tiny_dataset, "train")
    (tiny_dataset / "train.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_split(tiny_dataset, "train")


def test_factory(tiny_dataset: Path) -> None:
    preprocess = SimpleNamespace(input_size=224, mean=CLIP_MEAN, std=CLIP_STD, resize_size=None)
    cfg = DataConfig(root=str(tiny_dataset), num_frames=T, image_size=32, video_backend="pyav")
    train = build_train_dataset(cfg, preprocess, seed=0)
    assert isinstance(train, MovingFashionPairs) and train.transform.resize_size == 37
    assert train[0]["frames"].shape == (T, 3, 32, 32)
    queries, gallery = build_eval_datasets(cfg, preprocess)
    assert isinstance(queries, MovingFashionQueries) and isinstance(gallery, MovingFashionGallery)
    assert queries.transform.train is False and train.transform.train is True
    # The model's preprocess applies when the config leaves sizes unset.
    model_sized = build_eval_datasets(DataConfig(root=str(tiny_dataset)), SimpleNamespace(
        input_size=48, mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=50))[1]  # fmt: skip
    assert model_sized[0]["image"].shape == (3, 48, 48) and model_sized.transform.resize_size == 50
    unknown = DataConfig.model_construct(root=str(tiny_dataset), dataset="nope")  # bypasses the Literal check
    with pytest.raises(ValueError, match="choose from .*movingfashion"):
        build_train_dataset(unknown, preprocess)


def test_shop_augment_keeps_the_shop_image_clean(tiny_dataset: Path) -> None:
    """``data.shop_augment``: the frames keep their colour jitter and scale crops; the shop image gets only the
    random crop and flip (crop_flip) or the eval centre crop (none), checked against a reference in numpy."""
    preprocess = SimpleNamespace(input_size=32, mean=CLIP_MEAN, std=CLIP_STD, resize_size=36)
    base = {"root": str(tiny_dataset), "num_frames": T, "video_backend": "pyav", "color_jitter": 0.4,
            "crop_scale": (0.4, 0.8), "clip_crops": "frame"}  # fmt: skip
    img_path = tiny_dataset / _split(tiny_dataset, "train")[sorted(_split(tiny_dataset, "train"))[0]]["img_path"]
    resized = np.asarray(Image.open(img_path).convert("RGB").resize((36, 36), Image.BILINEAR), dtype=np.float64)

    def normalised(crop: np.ndarray) -> np.ndarray:
        return ((crop / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(2, 0, 1)

    def candidates(flips: bool) -> list[np.ndarray]:  # every 32 px crop of the resized image (and its mirror)
        crops = [resized[t : t + 32, s : s + 32] for t in range(5) for s in range(5)]
        return [normalised(c) for c in crops] + ([normalised(c[:, ::-1]) for c in crops] if flips else [])

    def closest(image: torch.Tensor, refs: list[np.ndarray]) -> float:
        return min(float(np.abs(image.numpy() - ref).max()) for ref in refs)

    same = build_train_dataset(DataConfig(**base), preprocess, seed=0)
    crop_flip = build_train_dataset(DataConfig(**base, shop_augment="crop_flip"), preprocess, seed=0)
    none = build_train_dataset(DataConfig(**base, shop_augment="none"), preprocess, seed=0)
    assert same.image_transform is same.transform  # the default: the frames' augmentation, as before
    flips = set()
    for epoch in range(6):
        for dataset in (same, crop_flip, none):
            dataset.set_epoch(epoch)
        item, plain, centre = same[0], crop_flip[0], none[0]
        assert closest(plain["image"], candidates(flips=True)) < 1e-5  # a plain crop and maybe a flip, no jitter
        flips.add(closest(plain["image"], candidates(flips=False)) < 1e-5)
        np.testing.assert_allclose(centre["image"].numpy(), normalised(resized[2:34, 2:34]), atol=1e-5)
        assert closest(item["image"], candidates(flips=True)) > 0.05  # the frames' jitter and scale crop
        torch.testing.assert_close(plain["frames"], item["frames"])  # the clip's augmentation is unchanged
    assert flips == {True, False}
    with pytest.raises(ValueError, match="shop_augment"):
        DataConfig(**base, shop_augment="jitter")
