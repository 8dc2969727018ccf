"""Synthetic livestream recordings (rice.data.synthetic_livestream, `rice synth --livestream`): the truth tiles the
recording, the decoded video has its length, and each product stretch shows that test product of the dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rice.cli import app
from rice.data import read_video_frames, video_info
from rice.data.synthetic import _product_specs, render_product
from rice.data.synthetic_livestream import (
    Stretch,
    load_dataset_products,
    render_host,
    render_stretch,
    synthetic_dataset_matches,
    write_synthetic_livestream,
)

FPS = 8
PARAMS = {"num_recordings": 2, "products_per_recording": 3, "product_seconds": (1.0, 2.0), "host_seconds": (0.5, 1.0),
          "fps": FPS, "seed": 5}  # fmt: skip


@pytest.fixture(scope="module")
def livestream(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("livestream")
    return out, write_synthetic_livestream(out, synthetic_root, **PARAMS)


def _truth(video):
    return json.loads(video.with_name(video.stem + ".truth.json").read_text())


def _dataset_products(root):
    """The test products as the dataset writer drew them: {id: (sprite, source)}, computed here from synthetic.json."""
    meta = json.loads((root / "synthetic.json").read_text())
    specs = _product_specs(meta["num_products"], meta["hard_fraction"], np.random.default_rng([meta["seed"], 0]))
    test = json.loads((root / "test.json").read_text())
    return {pid: (render_product(specs[int(pid) - 100000]), specs[int(pid) - 100000].source) for pid in test}


def test_truth_alternates_host_and_products_and_matches_the_decoded_video(livestream, synthetic_root):
    out, videos = livestream
    test_ids = set(json.loads((synthetic_root / "test.json").read_text()))
    assert [v.name for v in videos] == ["recording_00.mp4", "recording_01.mp4"]
    for video in videos:
        truth = _truth(video)
        segments = truth["segments"]
        assert truth["source"] == video.name and truth["fps"] == FPS and len(segments) == 3
        # Host first and last, a host gap between products, products distinct from their neighbour.
        assert 0 < segments[0]["start"] and segments[-1]["end"] < truth["duration"]
        for before, after in zip(segments, segments[1:]):
            assert before["end"] < after["start"] and before["id"] != after["id"]
        for s in segments:
            assert 1.0 - 1 / FPS <= s["end"] - s["start"] <= 2.0 + 1 / FPS  # drawn in [1, 2] s, whole frames
            assert s["id"] in test_ids
        info = video_info(video)
        frames = read_video_frames(video)
        assert len(frames) == info.num_frames == truth["num_frames"] == round(truth["duration"] * FPS)
        assert info.fps == FPS and frames.shape[1:] == (32, 32, 3)
    listing = json.loads((out / "livestream.json").read_text())
    assert [r["video"] for r in listing["recordings"]] == [v.name for v in videos]
    assert listing["dataset"]["seed"] == 3 and listing["products_per_recording"] == 3


def test_each_product_stretch_shows_its_product_from_its_first_frame(livestream, synthetic_root):
    """Re-render every product stretch from the documented seeds with each test product's sprite in turn (the
    dataset's sprites, computed here): the decoded frames match the true product's clip best, and the cut is exact
    (the frame before the stretch belongs to the host scene, not to the clip)."""
    _, videos = livestream
    products = _dataset_products(synthetic_root)
    meta = json.loads((synthetic_root / "synthetic.json").read_text())
    hard = meta["difficulty"] == "hard"
    for r, video in enumerate(videos):
        frames = read_video_frames(video).astype(np.float32)
        host = render_host(np.random.default_rng([PARAMS["seed"], 7, r, 0]))
        for j, s in enumerate(_truth(video)["segments"]):
            start, end = round(s["start"] * FPS), round(s["end"] * FPS)
            # Stretches alternate host, product, host, ...: product j is stretch 2j + 1, seeded [seed, 7, r, 2j + 2].
            stretch, rng_key = Stretch(start, end, s["id"]), [PARAMS["seed"], 7, r, 2 * j + 2]
            errors = {}
            for candidate in sorted(products):
                # The same scene (same seeds, same distractors) with the candidate's sprite in the product's place.
                table = {**products, s["id"]: (products[candidate][0], products[s["id"]][1])}
                rng = np.random.default_rng(rng_key)
                clip = render_stretch(stretch, table, host, meta["hard_fraction"], hard, 32, rng)
                errors[candidate] = float(np.abs(frames[start:end] - clip.astype(np.float32)).mean())
                if candidate == s["id"]:
                    first = clip[0].astype(np.float32)
            # H.264 at 32 px with 4:2:0 chroma costs ~6 grey levels on these noisy scenes (measured: the same as
            # encoding the clip on its own).
            assert errors[s["id"]] < 12 and min(errors, key=errors.get) == s["id"], (video.name, s, errors)
            assert np.abs(frames[start] - first).mean() < 0.5 * np.abs(frames[start - 1] - first).mean()


def test_same_seed_same_files(livestream, synthetic_root, tmp_path):
    out, videos = livestream
    again = write_synthetic_livestream(tmp_path, synthetic_root, **PARAMS)
    for a, b in zip(videos, again):
        assert a.read_bytes() == b.read_bytes() and _truth(a) == _truth(b)


def test_a_dataset_from_another_generator_is_refused(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("videos"))
    load_dataset_products(root)  # an unchanged copy is accepted
    first = sorted(json.loads((root / "test.json").read_text()))[0]
    Image.new("RGB", (64, 64), (0, 200, 0)).save(root / f"imgs/{first}_in_pp.jpg")
    with pytest.raises(ValueError, match="does not match its recomputed sprite"):
        write_synthetic_livestream(tmp_path / "out", root, **PARAMS)
    with pytest.raises(FileNotFoundError, match="rice synth --out"):
        write_synthetic_livestream(tmp_path / "out", tmp_path / "nothing")


def test_rice_synth_livestream_writes_then_reuses_the_dataset(tmp_path):
    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--products", "6", "--videos-per-product", "1", "--frames", "4", "--size",
            "32", "--seed", "2", "--livestream", "--recordings", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "synthetic dataset written to" in result.output and "1 recording(s)" in result.output
    assert synthetic_dataset_matches(out, num_products=6, videos_per_product=1, frames=4, size=32, seed=2)
    assert not synthetic_dataset_matches(out, num_products=6, videos_per_product=1, frames=4, size=32, seed=3)
    stamp = (out / "synthetic.json").stat().st_mtime_ns
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "using the synthetic dataset already in" in result.output, result.output
    assert (out / "synthetic.json").stat().st_mtime_ns == stamp
    truth = json.loads((out / "livestream" / "recording_00.truth.json").read_text())
    assert len(truth["segments"]) == 6 and video_info(out / "livestream" / "recording_00.mp4").num_frames == round(
        truth["duration"] * 8
    )
