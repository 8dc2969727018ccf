"""Transforms, temporal sampling and collation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rice.data import CLIP_MEAN, CLIP_STD, ClipTransform, build_transform, collate_batch
from rice.data.sampling import FramePolicy, drop_tail, pad_clip, sample_frame_indices


def _image(seed: int, height: int = 90, width: int = 130) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------------ transforms
def test_eval_matches_official_preprocessing_in_numpy() -> None:
    """PIL resize((256, 256), BILINEAR) -> centre crop 224 -> /255 -> CLIP mean/std, recomputed independently."""
    array = _image(0, 300, 420)
    out = build_transform(224, train=False)(Image.fromarray(array))
    resized = np.asarray(Image.fromarray(array).resize((256, 256), Image.BILINEAR), dtype=np.float64) / 255.0
    crop = resized[16:240, 16:240]
    expected = ((crop - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(2, 0, 1)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    # uint8 arrays and PIL images give the same result
    torch.testing.assert_close(build_transform(224, train=False)(array), out)


def test_resize_size_rule_and_override() -> None:
    assert build_transform(224, train=False).resize_size == 256
    assert build_transform(32, train=False).resize_size == 37
    assert build_transform(32, train=False, resize_size=40).resize_size == 40
    with pytest.raises(ValueError, match="resize_size"):
        build_transform(64, train=False, resize_size=32)


def test_train_crop_and_flip_are_seeded_and_valid() -> None:
    transform = build_transform(32, train=True, resize_size=48)
    array = _image(1)
    a = transform(array, random.Random(5))
    b = transform(array, random.Random(5))
    torch.testing.assert_close(a, b)
    params = [transform.sample_params(random.Random(seed)) for seed in range(200)]
    assert {p.flip for p in params} == {True, False}
    assert all(0 <= p.top <= 16 and 0 <= p.left <= 16 for p in params)
    assert len({(p.top, p.left) for p in params}) > 50
    # Flip really mirrors the crop.
    p = params[0]
    flipped = transform.apply(array, type(p)(p.top, p.left, True))
    straight = transform.apply(array, type(p)(p.top, p.left, False))
    torch.testing.assert_close(flipped, straight.flip(-1))


def test_clip_transform_uses_one_crop_for_all_frames() -> None:
    image_transform = build_transform(32, train=True, resize_size=48)
    clip = ClipTransform(image_transform)
    frames = [_image(i) for i in range(5)]
    for seed in range(10):
        out = clip(frames, random.Random(seed))
        assert out.shape == (5, 3, 32, 32)
        params = image_transform.sample_params(random.Random(seed))
        for frame, result in zip(frames, out):
            torch.testing.assert_close(result, image_transform.apply(frame, params))
    # Identical frames stay identical after (random) augmentation; a (T, H, W, 3) array works too.
    same = clip(np.stack([frames[0]] * 4))
    assert all(torch.equal(same[0], same[i]) for i in range(4))
    assert clip([]).shape == (0, 3, 32, 32)


def test_per_frame_crops_draw_one_crop_per_frame() -> None:
    """The public code's augmentation: every frame through the image transform on its own (train only)."""
    image_transform = build_transform(32, train=True, resize_size=48, per_frame_crops=True)
    frames = [_image(i) for i in range(5)]
    out = ClipTransform(image_transform)(frames, random.Random(4))
    rng = random.Random(4)
    for frame, result in zip(frames, out):
        torch.testing.assert_close(result, image_transform.apply(frame, image_transform.sample_params(rng)))
    same = ClipTransform(image_transform)(np.stack([frames[0]] * 6), random.Random(1))
    assert not all(torch.equal(same[0], same[i]) for i in range(6))  # identical frames, different crops
    eval_clip = ClipTransform(build_transform(32, train=False, resize_size=48, per_frame_crops=True))
    centred = eval_clip(np.stack([frames[0]] * 3))
    assert all(torch.equal(centred[0], centred[i]) for i in range(3))  # eval stays the centre crop


def test_torch_rng_path_when_no_rng() -> None:
    transform = build_transform(32, train=True, resize_size=48)
    torch.manual_seed(0)
    a = transform(_image(2))
    torch.manual_seed(0)
    torch.testing.assert_close(transform(_image(2)), a)


# -------------------------------------------------------------------------------------------------------- sampling
def test_eval_sampling_is_segment_centres() -> None:
    assert sample_frame_indices(100, 10, train=False) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert sample_frame_indices(20, 10, train=False) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert sample_frame_indices(10, 10, train=False) == list(range(10))
    assert sample_frame_indices(4, 10, train=False) == [0, 1, 2, 3]  # short clip: all frames


def test_official_eval_sampling_is_floor_i_n_over_t() -> None:
    """prepare_movingfashion.py keeps frames floor(i * n / 10) (linspace(0, n, 10, endpoint=False))."""
    for n in (10, 11, 14, 37, 100, 253):
        expected = [int(x) for x in np.floor(np.arange(10) * n / 10)]
        assert sample_frame_indices(n, 10, train=False, eval_sampling="official") == expected
    assert sample_frame_indices(4, 10, train=False, eval_sampling="official") == [0, 1, 2, 3]
    assert FramePolicy(eval_sampling="official").indices(14, 10, False, 0.5, None) == expected_14()
    with pytest.raises(ValueError, match="official"):
        sample_frame_indices(20, 10, train=False, eval_sampling="middle")


def expected_14() -> list[int]:
    return [0, 1, 2, 4, 5, 7, 8, 9, 11, 12]


def test_train_sampling_stays_in_segments() -> None:
    rng = random.Random(0)
    draws = [sample_frame_indices(100, 10, train=True, rng=rng) for _ in range(100)]
    for indices in draws:
        assert all(10 * i <= index < 10 * (i + 1) for i, index in enumerate(indices))
    assert len({tuple(d) for d in draws}) > 90
    assert sample_frame_indices(37, 10, True, random.Random(3)) == sample_frame_indices(37, 10, True, random.Random(3))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), t=st.integers(1, 16), train=st.booleans(), seed=st.integers(0, 2**32))
def test_sampling_properties(n: int, t: int, train: bool, seed: int) -> None:
    indices = sample_frame_indices(n, t, train, random.Random(seed))
    assert len(indices) == min(n, t)
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert all(0 <= i < n for i in indices)


def test_tail_drop() -> None:
    indices = list(range(0, 100, 10))
    assert drop_tail(indices, 0.0, random.Random(0)) == indices
    rng = random.Random(0)
    lengths = [len(drop_tail(indices, 0.5, rng)) for _ in range(4000)]
    # Kept length is 10 - floor(10 p), p in {0, .1, ..., .9}: 1..10, a head of the clip.
    assert set(lengths) == set(range(1, 11))
    dropped = sum(length < 10 for length in lengths) / len(lengths)
    assert 0.40 < dropped < 0.50  # P(drop) = 0.5 * 9/10 (p = 0 keeps all)
    always = [drop_tail(indices, 1.0, random.Random(s)) for s in range(50)]
    assert all(kept == indices[: len(kept)] and len(kept) >= 1 for kept in always)
    assert drop_tail([7], 1.0, random.Random(0)) == [7]  # never fewer than one frame
    with pytest.raises(ValueError):
        drop_tail(indices, 1.5)


def test_official_tail_drop_cuts_only_full_clips() -> None:
    """The public code cuts a clip's tail only when it has exactly T frames; shorter clips are never cut."""
    full, short = list(range(10)), list(range(7))
    official = FramePolicy(tail_drop="full")
    cut_full = [len(official.indices(50, 10, True, 1.0, random.Random(s))) for s in range(200)]
    cut_short = [len(official.indices(7, 10, True, 1.0, random.Random(s))) for s in range(200)]
    assert min(cut_full) < 10 and set(cut_short) == {7}
    anywhere = [len(FramePolicy(tail_drop="any").indices(7, 10, True, 1.0, random.Random(s))) for s in range(200)]
    assert min(anywhere) < 7
    assert drop_tail(short, 1.0, random.Random(0), full_length=10) == short
    assert len(drop_tail(full, 1.0, random.Random(1), full_length=10)) < 10


def test_pad_clip() -> None:
    frames = torch.ones(3, 3, 4, 4)
    padded, mask = pad_clip(frames, 5)
    assert padded.shape == (5, 3, 4, 4) and mask.tolist() == [True, True, True, False, False]
    assert padded[3:].abs().sum() == 0 and torch.equal(padded[:3], frames)
    with pytest.raises(ValueError):
        pad_clip(torch.ones(6, 3, 4, 4), 5)


# --------------------------------------------------------------------------------------------------------- collate
def test_collate_batch() -> None:
    items = [
        {"frames": torch.full((2, 3, 4, 4), float(i)), "frame_mask": torch.tensor([True, i == 0]),
         "video_id": f"v{i}", "gt_ids": [f"g{i}"], "source": i, "ok": True, "skipped": [f"bad{i}.mp4: x"] * i}
        for i in range(3)
    ]  # fmt: skip
    batch = collate_batch(items)
    assert batch["frames"].shape == (3, 2, 3, 4, 4) and batch["frame_mask"].shape == (3, 2)
    assert batch["video_id"] == ["v0", "v1", "v2"] and batch["gt_ids"] == [["g0"], ["g1"], ["g2"]]
    assert batch["source"] == [0, 1, 2] and batch["ok"] == [True, True, True]
    assert batch["skipped"] == ["bad1.mp4: x", "bad2.mp4: x", "bad2.mp4: x"]
    with pytest.raises(ValueError):
        collate_batch([])


def test_color_jitter_matches_a_numpy_reference_and_is_train_only() -> None:
    transform = build_transform(32, train=True, resize_size=32, color_jitter=0.4)
    image = _image(3)
    params = transform.sample_params(random.Random(7))
    b, c, s = params.jitter
    assert all(0.6 <= f <= 1.4 for f in params.jitter) and params.jitter != (1.0, 1.0, 1.0)
    # the reference: brightness, contrast about the mean, saturation about the luma grey, round and clip
    x = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR)).astype(np.float64) * b
    x = (x - x.mean()) * c + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = grey[..., None] + (x - grey[..., None]) * s
    expected = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    expected = expected[:, ::-1] if params.flip else expected
    got = transform.to_array(image, params)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float32 vs float64 rounding
    assert build_transform(32, train=False, resize_size=32, color_jitter=0.4).sample_params().jitter == (1.0, 1.0, 1.0)


def test_crop_scale_is_a_seeded_random_resized_crop_and_train_only() -> None:
    transform = build_transform(32, train=True, resize_size=48, crop_scale=(0.25, 0.6))
    image = _image(4)
    sides = set()
    for seed in range(40):
        params = transform.sample_params(random.Random(seed))
        assert params == transform.sample_params(random.Random(seed))  # seeded
        assert 24 <= params.side <= 37  # 48 * sqrt(0.25) .. 48 * sqrt(0.6)
        assert 0 <= params.top <= 48 - params.side and 0 <= params.left <= 48 - params.side
        sides.add(params.side)
        # the reference: PIL resize to 48, crop side x side at (top, left), PIL resize to 32, flip; the transform
        # resamples the source once, so it matches the two-step reference up to interpolation
        resized = np.asarray(Image.fromarray(image).resize((48, 48), Image.BILINEAR))
        crop = resized[params.top : params.top + params.side, params.left : params.left + params.side]
        expected = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((32, 32), Image.BILINEAR))
        expected = expected[:, ::-1] if params.flip else expected
        got = transform.to_array(image, params)
        assert got.shape == expected.shape == (32, 32, 3)
        # exactly: one bilinear resample of the crop's window, in source pixels (the image is 130 x 90)
        sx, sy = 130 / 48, 90 / 48
        box = (params.left * sx, params.top * sy, (params.left + params.side) * sx, (params.top + params.side) * sy)
        exact = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR, box=box))
        exact = exact[:, ::-1] if params.flip else exact
        assert np.array_equal(got, expected if params.side == 32 else exact)  # side 32 needs no second resize
    assert len(sides) > 5  # the scale varies
    # on a smooth image, the single resample and the two-step reference show the same window
    yy, xx = np.mgrid[0:90, 0:130]
    smooth = np.stack([xx * 255 // 129, yy * 255 // 89, (xx + yy) * 255 // 218], axis=-1).astype(np.uint8)
    for seed in range(10):
        params = transform.sample_params(random.Random(seed))
        resized = np.asarray(Image.fromarray(smooth).resize((48, 48), Image.BILINEAR))
        crop = resized[params.top : params.top + params.side, params.left : params.left + params.side]
        expected = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((32, 32), Image.BILINEAR))
        expected = expected[:, ::-1] if params.flip else expected
        assert np.abs(transform.to_array(smooth, params).astype(int) - expected.astype(int)).mean() < 3
    # eval ignores it: the centre crop of the official preprocessing
    evaluation = build_transform(32, train=False, resize_size=48, crop_scale=(0.25, 0.6))
    assert evaluation.sample_params() == build_transform(32, train=False, resize_size=48).sample_params()
    # without crop_scale the draws are the plain crop's, as before the setting existed
    plain = build_transform(32, train=True, resize_size=48).sample_params(random.Random(1))
    replay = random.Random(1)
    assert plain.side is None
    assert (plain.top, plain.left, plain.flip) == (replay.randint(0, 16), replay.randint(0, 16), replay.random() < 0.5)
    with pytest.raises(ValueError, match="crop_scale"):
        build_transform(32, train=True, crop_scale=(0.8, 0.5))
