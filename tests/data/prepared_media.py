"""A tiny MovingFashion root whose videos all have prepared JPEG frames (what `rice prepare` leaves), for the
device-stage and GPU-decoding tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from rice.data.movingfashion import video_id_of

FRAMES_PER_VIDEO = 7  # fewer than the tests' 10-frame clips: every clip has padded frames


def textured_frame(index: int, rng: np.random.Generator, height: int = 40, width: int = 64) -> np.ndarray:
    """A gradient that moves with ``index`` plus noise: every crop, flip and resample changes the pixels."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 4 + index * 9) % 256, (y * 6) % 256, ((x + y) * 3) % 256], -1)
    return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


def add_prepared_frames(root: Path, height: int = 40, width: int = 64, seed: int = 0) -> Path:
    """Write ``frames/<video>/00000k.jpg`` (quality 90) and the ``.done`` marker for every video of ``root``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for record in json.loads((root / f"{split}.json").read_text()).values():
            for video in record["video_paths"]:
                folder = root / "frames" / video_id_of(video)
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(FRAMES_PER_VIDEO):
                    Image.fromarray(textured_frame(i, rng, height, width)).save(folder / f"{i + 1:06d}.jpg",
                                                                                quality=90)
                (folder / ".done").touch()
    return root


def prepared_copy(master: Path, target: Path, height: int = 40, width: int = 64) -> Path:
    """A private copy of ``master`` (tests/data/conftest.py's tiny dataset) with prepared frames."""
    return add_prepared_frames(Path(shutil.copytree(master, target)), height, width)
