"""Tiny generated media for the data tests (everything lives under pytest's tmp dirs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rice.data.synthetic import write_mp4, write_synthetic_dataset
from tests.data.http_server import Server

NUM_VIDEO_FRAMES = 12


def make_frames(num_frames: int = NUM_VIDEO_FRAMES, height: int = 40, width: int = 64) -> np.ndarray:
    """Smooth, clearly different frames: a moving bright square on a gradient whose level encodes the index."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frame = np.stack([x * 4 % 256, y * 6 % 256, np.full_like(x, 20 * i % 256)], axis=-1).astype(np.uint8)
        top, left = 2 + i % (height - 10), 2 + (3 * i) % (width - 10)
        frame[top : top + 8, left : left + 8] = 255
        frames[i] = frame
    return frames


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An H.264 mp4 (12 frames, 64x40, 8 fps) and the frames it was encoded from."""
    frames = make_frames()
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(path, frames, fps=8)
    return path, frames


@pytest.fixture(scope="session")
def tiny_dataset_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("mf") / "root",
        num_products=6,
        videos_per_product=1,
        frames=NUM_VIDEO_FRAMES,
        size=32,
        image_size=48,
        seed=3,
    )


@pytest.fixture
def tiny_dataset(tiny_dataset_master: Path, tmp_path: Path) -> Path:
    """A private copy of a 6-product synthetic MovingFashion root that a test may damage."""
    return Path(shutil.copytree(tiny_dataset_master, tmp_path / "root"))


@pytest.fixture()
def server():
    """A local HTTP server on 127.0.0.1 (see http_server.Server), shut down after the test."""
    srv = Server()
    yield srv
    srv.close()
