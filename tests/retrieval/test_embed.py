"""Batch embedding equals one-at-a-time embedding; bad files are skipped and listed; queries of every kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rice
from rice.data.model_input import query_frames
from rice.models import create_model
from rice.retrieval.embed import embed_images, embed_query, embed_videos


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("rice_tiny").eval()


def test_images_in_batches_equal_one_by_one_and_bad_files_are_listed(tiny_model, synthetic_root, tmp_path):
    images = sorted((synthetic_root / "imgs").iterdir())[:5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    batch = embed_images(tiny_model, [images[0], broken, *images[1:]], batch_size=2)
    assert batch.ids == [p.stem for p in images] and batch.positions.tolist() == [0, 2, 3, 4, 5]
    assert len(batch.skipped) == 1 and batch.skipped[0].startswith(str(broken))
    single = np.stack([rice.embed_image(tiny_model, p).numpy() for p in images])
    np.testing.assert_allclose(batch.embeddings, single, atol=1e-5)
    assert batch.embeddings.dtype == np.float32 and batch.embeddings.shape == (5, tiny_model.embed_dim)


def test_videos_frame_folders_and_image_queries(tiny_model, synthetic_root, tmp_path):
    test = json.loads((synthetic_root / "test.json").read_text())
    videos = [synthetic_root / rec["video_paths"][0] for rec in list(test.values())[:3]]
    batch = embed_videos(tiny_model, videos, batch_size=2, num_frames=4)
    single = np.stack([rice.embed_video(tiny_model, v, num_frames=4).numpy() for v in videos])
    np.testing.assert_allclose(batch.embeddings, single, atol=1e-5)
    # A folder holding the sampled frames of a clip is the same query as the clip.
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = query_frames(videos[0], 4)
    assert len(frames) == 4
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:06d}.png")
    np.testing.assert_allclose(embed_query(tiny_model, folder, num_frames=4), single[0], atol=1e-5)
    np.testing.assert_allclose(embed_query(tiny_model, videos[0], num_frames=4), single[0], atol=1e-5)
    image = sorted((synthetic_root / "imgs").iterdir())[0]
    np.testing.assert_allclose(embed_query(tiny_model, image), rice.embed_image(tiny_model, image).numpy(), atol=1e-5)


def test_pil_and_tensor_items(tiny_model, synthetic_root):
    from rice.data import load_image
    from rice.data.model_input import eval_transform

    path = sorted((synthetic_root / "imgs").iterdir())[0]
    pil = load_image(path)
    tensor = eval_transform(tiny_model.preprocess)(pil)
    batch = embed_images(tiny_model, [pil, tensor, path])
    np.testing.assert_allclose(batch.embeddings[0], batch.embeddings[2], atol=1e-6)
    np.testing.assert_allclose(batch.embeddings[1], batch.embeddings[2], atol=1e-6)
    assert batch.paths == [None, None, str(path)]


def test_an_unreadable_query_is_one_line(tiny_model, tmp_path):
    from rice.data import MediaError

    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(MediaError, match="clip.mp4"):
        embed_query(tiny_model, bad)
    with pytest.raises(MediaError, match="not an image"):
        embed_query(tiny_model, tmp_path / "notes.txt")
