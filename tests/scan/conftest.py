"""A trained tiny model, a catalogue index of the synthetic test products and a recording that shows two of them
between host-only stretches, shared by the scan tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FPS = 8
SIZE = 32


@dataclass
class ScanSetup:
    checkpoint: Path
    index_dir: Path
    recording: Path  # H.264 mp4
    stream: Path  # the same frames as MPEG-TS
    frames: np.ndarray  # what was encoded (N, H, W, 3)
    truth: list[tuple[float, float, str]]  # (start, end, id) of each product stretch


def panning_shots(image_path: Path, frames: int, size: int = SIZE) -> np.ndarray:
    """A camera panning a few pixels across a shop image: a clip of that product."""
    with Image.open(image_path) as image:
        source = np.asarray(image.convert("RGB").resize((size + 4, size + 4), Image.BILINEAR))
    return np.stack([source[t % 4 : t % 4 + size, (t // 3) % 4 : (t // 3) % 4 + size] for t in range(frames)])


def host_shots(frames: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Host-only frames: a grey room with a slowly moving dark figure, no product."""
    rng = np.random.default_rng(seed)
    out = np.full((frames, size, size, 3), 120, dtype=np.uint8)
    out += rng.integers(0, 8, (1, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        x = 4 + (t // 2) % (size - 12)
        out[t, 8:, x : x + 8] = (60, 50, 45)
        out[t, 3:9, x + 1 : x + 7] = (200, 160, 140)
    return out


@pytest.fixture(scope="session")
def scan_setup(tmp_path_factory, synthetic_root, tiny_checkpoint) -> ScanSetup:
    from rice.data.synthetic import write_mp4
    from rice.models.loading import load
    from rice.retrieval.catalogue import Index

    work = tmp_path_factory.mktemp("scan")
    checkpoint = tiny_checkpoint
    test = json.loads((synthetic_root / "test.json").read_text())
    images = {Path(r["img_path"]).stem: synthetic_root / r["img_path"] for r in test.values()}
    ids = sorted(images)
    Index.build(load(checkpoint), [images[i] for i in ids], ids=ids, checkpoint=checkpoint).save(work / "index")
    # host 2 s, product A 4 s, host 2 s, product B 4 s, host 2 s
    a, b = ids[0], ids[1]
    parts = [host_shots(2 * FPS, 0), panning_shots(images[a], 4 * FPS), host_shots(2 * FPS, 1),
             panning_shots(images[b], 4 * FPS), host_shots(2 * FPS, 2)]  # fmt: skip
    frames = np.concatenate(parts)
    write_mp4(work / "recording.mp4", frames, fps=FPS)
    write_mp4(work / "recording.ts", frames, fps=FPS)
    return ScanSetup(checkpoint, work / "index", work / "recording.mp4", work / "recording.ts", frames,
                     [(2.0, 6.0, a), (8.0, 12.0, b)])  # fmt: skip
